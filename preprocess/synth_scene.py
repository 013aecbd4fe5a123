"""Scenes of the synthetic city: analytic primitives with labels, and the street generator.

World frame: X along the street (direction of travel), Y to the left, Z up, metres; the road is
Z = 0 (see `preprocess.synth_render` for the camera conventions). A `World` holds static and
moving primitives; `World.scene_at(frame)` places the moving ones and returns a `Scene`, the flat
arrays the numba ray caster takes.

Primitives (`geom` is 6 floats):
  BOX       axis-aligned box (xmin, ymin, zmin, xmax, ymax, zmax)
  CYLINDER  vertical cylinder with a top cap (cx, cy, radius, z0, z1, 0)
  SPHERE    (cx, cy, cz, radius, 0, 0)

Small scenes for known-answer tests (all with a level camera from `level_pose`):
  `car_in_front_of_facade()`  one car on a road plane, a building facade behind it
  `two_planes()`              the road plane and a facade wall facing the camera
  `box_on_ground()`           one box (a car) standing on the road plane
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from shared.labels import BUILDING, CAR, PERSON, POLE, ROAD, SIDEWALK, VEGETATION

BOX, CYLINDER, SPHERE = 0, 1, 2
TEX_NOISE, TEX_FACADE, TEX_TILES, TEX_CAR, TEX_FOLIAGE, TEX_SKIN = 0, 1, 2, 3, 4, 5

CAMERA_HEIGHT = 1.6  # metres above the road
TRAFFIC_LIGHT, TRAFFIC_SIGN = 19, 20  # Cityscapes labelIds
LANE_Y = -1.75  # the camera drives in the right-hand lane (Y points left)
TRAVEL_HALF = 3.5  # two 3.5 m travel lanes; the edge lines are painted at |Y| = 3.5
ROAD_HALF = 5.5  # plus a 2 m parking lane on each side
SIDEWALK_WIDTH = 3.0
KERB = 0.15  # sidewalk height
SKY_MARGIN = 250.0  # the sky box lies this far beyond the street
MAX_INSTANCES = 1000  # instanceIds = labelId*1000 + k needs k < 1000


@dataclass
class Primitive:
    kind: int
    geom: tuple[float, ...]
    colour: tuple[float, float, float]
    texture: int
    label: int
    instance: int
    tex_seed: int = 0
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)  # metres per frame (moving objects)


@dataclass
class Scene:
    """Flat arrays for the ray caster (N primitives) plus the ground and sky."""

    kind: np.ndarray  # int64 [N]
    geom: np.ndarray  # float64 [N, 6]
    colour: np.ndarray  # float64 [N, 3] albedo 0..1
    texture: np.ndarray  # int64 [N]
    label: np.ndarray  # uint8 [N] labelIds
    instance: np.ndarray  # int32 [N] instanceIds
    offset: np.ndarray  # float64 [N, 3] displacement since frame 0: textures move with their object
    tex_seed: np.ndarray  # int64 [N]
    sky_box: np.ndarray  # float64 [6]: the camera must be inside it
    ground: bool = True  # the plane Z = 0
    road_half: float = 1e6  # |Y| <= road_half is `ground_label`, beyond it `ground_outer_label`
    ground_label: int = ROAD
    ground_outer_label: int = SIDEWALK
    marks: bool = False  # dashed centre line at Y = 0
    edge_line: float = 0.0  # solid lines at |Y| = edge_line (0 = none)
    seed: int = 0


def _x_extent(p: Primitive) -> tuple[float, float]:
    g = p.geom
    if p.kind == BOX:
        return g[0], g[3]
    if p.kind == CYLINDER:
        return g[0] - g[2], g[0] + g[2]
    return g[0] - g[3], g[0] + g[3]


def _moved(p: Primitive, frame: int) -> tuple[tuple[float, ...], tuple[float, float, float]]:
    dx, dy, dz = (v * frame for v in p.velocity)
    g = list(p.geom)
    if p.kind == BOX:
        g = [g[0] + dx, g[1] + dy, g[2] + dz, g[3] + dx, g[4] + dy, g[5] + dz]
    elif p.kind == CYLINDER:
        g = [g[0] + dx, g[1] + dy, g[2], g[3] + dz, g[4] + dz, 0.0]
    else:
        g = [g[0] + dx, g[1] + dy, g[2] + dz, g[3], 0.0, 0.0]
    return tuple(g), (dx, dy, dz)


@dataclass
class World:
    primitives: list[Primitive]
    sky_box: tuple[float, ...]
    road_half: float = 1e6
    ground_label: int = ROAD
    ground_outer_label: int = SIDEWALK
    marks: bool = False
    edge_line: float = 0.0
    seed: int = 0

    def dynamic_instances(self) -> list[int]:
        return sorted({p.instance for p in self.primitives if any(v != 0.0 for v in p.velocity)})

    def scene_at(self, frame: int = 0, behind_x: Optional[float] = None) -> Scene:
        """The scene at `frame` (moving objects advanced by velocity * frame). Primitives lying
        entirely at X < behind_x are dropped: behind a forward-looking camera they cannot be seen,
        and skipping them is most of the street's render time."""
        rows = []
        for p in self.primitives:
            g, off = _moved(p, frame)
            if behind_x is not None:
                x0, x1 = _x_extent(Primitive(p.kind, g, p.colour, p.texture, p.label, p.instance))
                if x1 < behind_x:
                    continue
            rows.append((p, g, off))
        n = len(rows)
        return Scene(
            kind=np.array([p.kind for p, _, _ in rows], dtype=np.int64).reshape(n),
            geom=np.array([g for _, g, _ in rows], dtype=np.float64).reshape(n, 6),
            colour=np.array([p.colour for p, _, _ in rows], dtype=np.float64).reshape(n, 3),
            texture=np.array([p.texture for p, _, _ in rows], dtype=np.int64).reshape(n),
            label=np.array([p.label for p, _, _ in rows], dtype=np.uint8).reshape(n),
            instance=np.array([p.instance for p, _, _ in rows], dtype=np.int32).reshape(n),
            offset=np.array([o for _, _, o in rows], dtype=np.float64).reshape(n, 3),
            tex_seed=np.array([p.tex_seed for p, _, _ in rows], dtype=np.int64).reshape(n),
            sky_box=np.asarray(self.sky_box, dtype=np.float64),
            ground=True, road_half=self.road_half, ground_label=self.ground_label,
            ground_outer_label=self.ground_outer_label, marks=self.marks, edge_line=self.edge_line,
            seed=self.seed,
        )


# ---------------------------------------------------------------------------------------------
# Cameras


def pixel_K(size: tuple[int, int], fx: float = 0.6) -> np.ndarray:
    """3x3 pixel intrinsics with square pixels: fx normalised by the width (0.6: about 80 deg
    horizontal field of view), principal point at the image centre."""
    H, W = size
    f = fx * W
    return np.array([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])


def camera_pose(x: float, y: float, z: float, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """Camera-to-world 4x4 for a camera at (x, y, z) looking along +X, turned left by `yaw` and
    up by `pitch` (radians), no roll. Camera axes are OpenCV's (x right, y down, z forward)."""
    level = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    Rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    Ry = np.array([[cp, 0.0, -sp], [0.0, 1.0, 0.0], [sp, 0.0, cp]])  # +pitch lifts the X axis up
    T = np.eye(4)
    T[:3, :3] = Rz @ Ry @ level
    T[:3, 3] = (x, y, z)
    return T


def level_pose(x: float = 0.0, y: float = 0.0, height: float = CAMERA_HEIGHT) -> np.ndarray:
    return camera_pose(x, y, height)


# ---------------------------------------------------------------------------------------------
# Object helpers


def car(x: float, y: float, k: int, colour, tex_seed: int = 0, velocity=(0.0, 0.0, 0.0),
        length: float = 4.3, width: float = 1.8) -> list[Primitive]:
    """A car centred at (x, y): a dark chassis (reads as wheels and shadow), the body box and a
    glass cabin box, one instance CAR*1000+k."""
    if not 0 <= k < MAX_INSTANCES:
        raise ValueError(f"instance number {k} does not fit labelId*1000+k")
    inst = CAR * 1000 + k
    hl, hw = length / 2, width / 2
    v = tuple(velocity)
    chassis = Primitive(BOX, (x - hl + 0.4, y - hw + 0.08, 0.0, x + hl - 0.4, y + hw - 0.08, 0.2), (0.06, 0.06, 0.07),
                        TEX_NOISE, CAR, inst, tex_seed + 2, v)
    body = Primitive(BOX, (x - hl, y - hw, 0.2, x + hl, y + hw, 1.0), tuple(colour), TEX_CAR, CAR, inst, tex_seed, v)
    cabin = Primitive(BOX, (x - hl * 0.55 - 0.25, y - hw * 0.88, 1.0, x + hl * 0.45 - 0.25, y + hw * 0.88, 1.45),
                      (0.12, 0.14, 0.17), TEX_CAR, CAR, inst, tex_seed + 1, v)
    return [chassis, body, cabin]


def pedestrian(x: float, y: float, k: int, colour, z0: float = KERB, tex_seed: int = 0,
               velocity=(0.0, 0.0, 0.0)) -> list[Primitive]:
    if not 0 <= k < MAX_INSTANCES:
        raise ValueError(f"instance number {k} does not fit labelId*1000+k")
    inst = PERSON * 1000 + k
    body = Primitive(CYLINDER, (x, y, 0.22, z0, z0 + 1.4, 0.0), tuple(colour), TEX_NOISE, PERSON, inst,
                     tex_seed, tuple(velocity))
    head = Primitive(SPHERE, (x, y, z0 + 1.55, 0.13, 0.0, 0.0), (0.8, 0.62, 0.5), TEX_SKIN, PERSON, inst,
                     tex_seed + 1, tuple(velocity))
    return [body, head]


def facade(x0: float, x1: float, y0: float, y1: float, height: float, colour, tex_seed: int = 0) -> Primitive:
    return Primitive(BOX, (x0, y0, 0.0, x1, y1, height), tuple(colour), TEX_FACADE, BUILDING, BUILDING, tex_seed)


def _simple_world(prims: list[Primitive], seed: int, sky_distance: float = 300.0) -> World:
    d = float(sky_distance)
    return World(prims, sky_box=(-d, -d, -1.0, d, d, d), road_half=1e6, marks=True, seed=seed)


def car_in_front_of_facade(car_distance: float = 10.0, facade_distance: float = 25.0, facade_height: float = 8.0,
                           seed: int = 0, sky_distance: float = 300.0) -> Scene:
    """One car (4.3 m long, 1.8 m wide, body 0.2-1.0 m, cabin to 1.45 m) centred `car_distance` m
    ahead of the origin on Y = 0, and a building facade (front face at X = facade_distance, 80 m
    wide, `facade_height` m high) behind it; the ground is road everywhere. Seen from `level_pose()`
    with `pixel_K`: road below, the car in the middle, facade behind, sky above the facade.
    Labels: road 7, car 26 (instance 26000), building 11, sky 23. The sky is the inside of a box
    reaching `sky_distance` m from the origin in X, Y and up (the simple scenes' sky box)."""
    prims = car(car_distance, 0.0, 0, (0.7, 0.1, 0.1), tex_seed=3)
    prims.append(facade(facade_distance, facade_distance + 10.0, -40.0, 40.0, facade_height, (0.75, 0.6, 0.45), 7))
    return _simple_world(prims, seed, sky_distance).scene_at(0)


def two_planes(wall_distance: float = 20.0, wall_height: float = 30.0, seed: int = 0,
               sky_distance: float = 300.0) -> Scene:
    """The road plane Z = 0 and a facade wall with front face at X = wall_distance (80 m wide,
    `wall_height` m high): a level camera sees road below the horizon, the wall above the road
    and sky above the wall."""
    return _simple_world([facade(wall_distance, wall_distance + 10.0, -40.0, 40.0, wall_height,
                                 (0.7, 0.55, 0.45), 7)], seed, sky_distance).scene_at(0)


def box_on_ground(distance: float = 8.0, size: tuple[float, float, float] = (2.0, 2.0, 1.5), seed: int = 0,
                  sky_distance: float = 300.0) -> Scene:
    """One box (labelled car, instance 26000) of size (length X, width Y, height Z) whose near face
    is at X = distance, centred on Y = 0, standing on the road plane."""
    L, Wd, Hh = size
    prims = [Primitive(BOX, (distance, -Wd / 2, 0.0, distance + L, Wd / 2, Hh), (0.2, 0.3, 0.7), TEX_CAR, CAR,
                       CAR * 1000, 3)]
    return _simple_world(prims, seed, sky_distance).scene_at(0)


# ---------------------------------------------------------------------------------------------
# The street

FACADE_COLOURS = [(0.78, 0.7, 0.58), (0.62, 0.38, 0.3), (0.85, 0.82, 0.75), (0.55, 0.55, 0.58),
                  (0.72, 0.6, 0.42), (0.5, 0.42, 0.36), (0.82, 0.74, 0.66), (0.66, 0.7, 0.72)]
CAR_COLOURS = [(0.7, 0.08, 0.08), (0.1, 0.2, 0.55), (0.85, 0.85, 0.85), (0.08, 0.08, 0.09),
               (0.5, 0.52, 0.55), (0.15, 0.4, 0.2), (0.8, 0.6, 0.1), (0.35, 0.25, 0.55)]
CLOTHES = [(0.15, 0.15, 0.35), (0.5, 0.1, 0.1), (0.2, 0.2, 0.2), (0.6, 0.55, 0.4), (0.1, 0.35, 0.3),
           (0.7, 0.7, 0.72)]


def drive(rng: np.random.Generator, frames: int) -> tuple[list[np.ndarray], float]:
    """Camera poses for a forward drive along +X in the right lane with gentle yaw/pitch/lateral
    sway; returns (poses, speed in metres per frame)."""
    speed = float(rng.uniform(0.8, 1.2))
    ph = rng.uniform(0, 2 * np.pi, size=3)
    yaw_amp = np.deg2rad(rng.uniform(1.0, 2.5))
    pitch_amp = np.deg2rad(rng.uniform(0.3, 1.0))
    poses = []
    for f in range(frames):
        x = speed * f
        y = LANE_Y + 0.15 * np.sin(2 * np.pi * f / 30.0 + ph[0])
        z = CAMERA_HEIGHT + 0.02 * np.sin(2 * np.pi * f / 7.0 + ph[1])
        yaw = yaw_amp * np.sin(2 * np.pi * f / 25.0 + ph[2])
        pitch = pitch_amp * np.sin(2 * np.pi * f / 17.0 + ph[1])
        poses.append(camera_pose(x, y, z, yaw, pitch))
    return poses, speed


def street(rng: np.random.Generator, length: float, speed: float, seed: int) -> World:
    """A straight street from X = -20 to X = length closed by a cross building: two travel lanes,
    parking lanes, raised sidewalks, contiguous facades with windows, trees, poles, parked and
    oncoming cars, a car ahead in the camera's lane (sometimes), standing and walking people."""
    x_start, x_end = -20.0, float(length)
    prims: list[Primitive] = []
    ts = iter(range(1, 1_000_000, 2))  # texture seeds: one per primitive, stable across frames
    wall = ROAD_HALF + SIDEWALK_WIDTH
    # sidewalks (raised by the kerb height), reaching under the buildings so that a recessed
    # facade stands on pavement
    for s in (-1.0, 1.0):
        y0, y1 = sorted((s * ROAD_HALF, s * (wall + 4.0)))
        prims.append(Primitive(BOX, (x_start, y0, 0.0, x_end, y1, KERB), (0.62, 0.6, 0.56), TEX_TILES, SIDEWALK,
                               SIDEWALK, next(ts)))
    # facades, contiguous on both sides, and a cross building closing the street
    for s in (-1.0, 1.0):
        x = x_start
        while x < x_end:
            w = float(rng.uniform(8.0, 22.0))
            h = float(rng.uniform(7.0, 24.0))
            col = FACADE_COLOURS[int(rng.integers(len(FACADE_COLOURS)))]
            setback = float(rng.uniform(0.5, 3.0)) if rng.random() < 0.35 else 0.0  # depth steps along the street
            y0, y1 = sorted((s * (wall + setback), s * (wall + 12.0)))
            prims.append(facade(x, min(x + w, x_end), y0, y1, h, col, next(ts)))
            x += w
    prims.append(facade(x_end, x_end + 12.0, -(wall + 12.0), wall + 12.0, float(rng.uniform(12.0, 25.0)),
                        FACADE_COLOURS[int(rng.integers(len(FACADE_COLOURS)))], next(ts)))
    # trees and poles on the sidewalks
    for s in (-1.0, 1.0):
        x = x_start + float(rng.uniform(0, 8))
        while x < x_end - 3:
            if rng.random() < 0.7:
                y = s * (ROAD_HALF + 1.8)
                r = float(rng.uniform(1.2, 2.0))
                top = float(rng.uniform(2.3, 3.0))
                prims.append(Primitive(CYLINDER, (x, y, 0.15, KERB, top + 0.5, 0.0), (0.35, 0.25, 0.15), TEX_NOISE,
                                       VEGETATION, VEGETATION, next(ts)))
                prims.append(Primitive(SPHERE, (x, y, top + r * 0.8, r, 0.0, 0.0),
                                       (0.2, float(rng.uniform(0.35, 0.5)), 0.12), TEX_FOLIAGE, VEGETATION,
                                       VEGETATION, next(ts)))
            x += float(rng.uniform(9.0, 16.0))
        x = x_start + float(rng.uniform(0, 10))
        while x < x_end - 3:
            y = s * (ROAD_HALF + 0.4)
            top = float(rng.uniform(4.5, 7.0))
            prims.append(Primitive(CYLINDER, (x, y, 0.09, KERB, top, 0.0), (0.3, 0.31, 0.33), TEX_NOISE, POLE, POLE,
                                   next(ts)))
            kind = rng.random()
            if kind < 0.35:  # a sign plate facing the traffic, in front of the pole
                col = [(0.85, 0.1, 0.1), (0.1, 0.25, 0.75), (0.9, 0.8, 0.1)][int(rng.integers(3))]
                prims.append(Primitive(BOX, (x - 0.16, y - 0.3, 2.2, x - 0.1, y + 0.3, 2.8), col, TEX_NOISE,
                                       TRAFFIC_SIGN, TRAFFIC_SIGN, next(ts)))
            elif kind < 0.55:  # a traffic light head near the top
                prims.append(Primitive(BOX, (x - 0.35, y - 0.15, top - 1.0, x - 0.1, y + 0.15, top - 0.1),
                                       (0.08, 0.09, 0.08), TEX_NOISE, TRAFFIC_LIGHT, TRAFFIC_LIGHT, next(ts)))
            x += float(rng.uniform(16.0, 26.0))
    # cars: parked along both kerbs, oncoming in the left lane, maybe one ahead in our lane
    k_car = 0
    for s in (-1.0, 1.0):
        x = x_start + float(rng.uniform(0, 5))
        while x < x_end - 5:
            if rng.random() < 0.55 and k_car < MAX_INSTANCES // 2:
                col = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
                prims += car(x, s * (ROAD_HALF - 1.1), k_car, col, next(ts))
                next(ts)
                k_car += 1
            x += float(rng.uniform(5.5, 8.0))
    oncoming = -float(rng.uniform(0.6, 1.3))  # one speed for the lane, so cars never run into each other
    x = float(rng.uniform(15.0, 40.0))
    while x < x_end and k_car < MAX_INSTANCES - 1:
        col = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
        prims += car(x, -LANE_Y, k_car, col, next(ts), velocity=(oncoming, 0.0, 0.0))
        next(ts)
        k_car += 1
        x += float(rng.uniform(25.0, 60.0))
    if rng.random() < 0.5:
        col = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
        prims += car(float(rng.uniform(14.0, 25.0)), LANE_Y, k_car, col, next(ts), velocity=(speed, 0.0, 0.0))
        next(ts)
        k_car += 1
    # people on the sidewalks, some walking along them
    k_person = 0
    for n in range(int(rng.integers(4, 9))):
        s = 1.0 if rng.random() < 0.5 else -1.0
        # the first one stands just ahead, so even a few frames show a person
        x = float(rng.uniform(10.0, 22.0)) if n == 0 else float(rng.uniform(5.0, x_end - 5))
        walking = rng.random() < 0.5
        # walkers keep to the strip between the trees and the facades; people standing still may
        # also stand between the poles and the trees: nobody walks through a trunk or a pole
        if walking or rng.random() < 0.5:
            y = s * float(rng.uniform(ROAD_HALF + 2.25, wall - 0.3))
        else:
            y = s * float(rng.uniform(ROAD_HALF + 0.8, ROAD_HALF + 1.4))
        v = (float(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.16)), 0.0, 0.0) if walking else (0.0, 0.0, 0.0)
        prims += pedestrian(x, y, k_person, CLOTHES[int(rng.integers(len(CLOTHES)))], tex_seed=next(ts), velocity=v)
        next(ts)
        k_person += 1
    sky = (x_start - SKY_MARGIN, -SKY_MARGIN, -1.0, x_end + SKY_MARGIN, SKY_MARGIN, SKY_MARGIN)
    return World(prims, sky_box=sky, road_half=ROAD_HALF, ground_label=ROAD, ground_outer_label=SIDEWALK,
                 marks=True, edge_line=TRAVEL_HALF, seed=seed)
