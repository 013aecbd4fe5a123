"""Ray casting of the synthetic city's analytic primitives (numba, one ray per pixel).

Conventions (shared with `preprocess.synth_scene` and the files `preprocess.synth` writes):

* World frame: X along the street (the direction of travel), Y to the left, Z up; metres.
  The road is the plane Z = 0.
* Camera frame (OpenCV): x right, y down, z forward. A pose is camera-to-world, 4x4:
  p_world = R @ p_cam + t. A level camera looking down the street has
  R = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]] (`LEVEL_CAMERA`).
* Pixels: pixel (row i, column j) has its centre at (u, v) = (j + 0.5, i + 0.5), the ray
  through it is R @ K^-1 [u, v, 1] (as `shared.frames.Frame.K` assumes).
* Depth is the z coordinate in the camera frame (what a monocular depth network predicts),
  not the distance along the ray. Because the camera-frame ray has z = 1, the hit parameter t
  of `origin + t * ray` is exactly that depth.
* The sky is the inside of a large world-fixed box (`Scene.sky_box`, about 250 m beyond the
  street), so every pixel has a finite, positive depth and the sky reprojects like any other
  static surface.

Shading is Lambertian under one fixed sun plus ambient light and no shadows, and every texture
is a function of the surface point in the object's own frame: so a static point has the same
colour from every viewpoint, and a photometric loss between frames is exactly zero on static,
unoccluded pixels (up to image resampling).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from preprocess.synth_scene import (BOX, CYLINDER, SPHERE, TEX_CAR, TEX_FACADE, TEX_FOLIAGE, TEX_NOISE,
                                    TEX_SKIN, TEX_TILES, Scene)
from shared.labels import SKY

LEVEL_CAMERA = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
SUN = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])  # from the front-right, high
AMBIENT = 0.45
EPS = 1e-6


@njit(cache=True)
def _hash(ix: int, iy: int, iz: int, seed: int) -> float:
    """Deterministic lattice hash in [0, 1) (integer-only arithmetic: identical on every platform)."""
    h = (ix * 374761393 + iy * 668265263 + iz * 1274126177 + seed * 1442695041) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 2246822519) & 0xFFFFFFFF
    h = h ^ (h >> 15)
    return h / 4294967296.0


@njit(cache=True)
def _smooth(t: float) -> float:
    return t * t * (3.0 - 2.0 * t)


@njit(cache=True)
def value_noise(x: float, y: float, z: float, seed: int) -> float:
    """Trilinear value noise in [0, 1) with a smoothstep fade; lattice spacing 1."""
    fx, fy, fz = np.floor(x), np.floor(y), np.floor(z)
    ix, iy, iz = int(fx), int(fy), int(fz)
    tx, ty, tz = _smooth(x - fx), _smooth(y - fy), _smooth(z - fz)
    c000 = _hash(ix, iy, iz, seed)
    c100 = _hash(ix + 1, iy, iz, seed)
    c010 = _hash(ix, iy + 1, iz, seed)
    c110 = _hash(ix + 1, iy + 1, iz, seed)
    c001 = _hash(ix, iy, iz + 1, seed)
    c101 = _hash(ix + 1, iy, iz + 1, seed)
    c011 = _hash(ix, iy + 1, iz + 1, seed)
    c111 = _hash(ix + 1, iy + 1, iz + 1, seed)
    a = c000 + tx * (c100 - c000)
    b = c010 + tx * (c110 - c010)
    c = c001 + tx * (c101 - c001)
    d = c011 + tx * (c111 - c011)
    e = a + ty * (b - a)
    f = c + ty * (d - c)
    return e + tz * (f - e)


@njit(cache=True)
def _fbm(x: float, y: float, z: float, scale: float, seed: int) -> float:
    """Two octaves of value noise around 0 (range about [-0.5, 0.5]); `scale` = feature size in metres."""
    s = 1.0 / scale
    n = 0.65 * value_noise(x * s, y * s, z * s, seed) + 0.35 * value_noise(x * s * 3.7, y * s * 3.7, z * s * 3.7, seed + 17)
    return n - 0.5


@njit(cache=True)
def _hit_box(o, d, g):
    """Slab test against the box g = (xmin, ymin, zmin, xmax, ymax, zmax): (t, axis, sign) or t = inf."""
    tmin = -np.inf
    tmax = np.inf
    axis = -1
    sign = 0.0
    for a in range(3):
        lo = g[a]
        hi = g[a + 3]
        if abs(d[a]) < 1e-12:
            if o[a] < lo or o[a] > hi:
                return np.inf, -1, 0.0
            continue
        t1 = (lo - o[a]) / d[a]
        t2 = (hi - o[a]) / d[a]
        s = -1.0  # entering through the low face: outward normal points to -axis
        if t1 > t2:
            t1, t2 = t2, t1
            s = 1.0
        if t1 > tmin:
            tmin = t1
            axis = a
            sign = s
        if t2 < tmax:
            tmax = t2
    if tmax < tmin or tmin <= EPS:
        return np.inf, -1, 0.0
    return tmin, axis, sign


@njit(cache=True)
def _hit_cylinder(o, d, g):
    """Vertical cylinder g = (cx, cy, r, z0, z1, _) with a top cap: (t, kind) kind 0 side, 1 cap."""
    cx, cy, r, z0, z1 = g[0], g[1], g[2], g[3], g[4]
    best = np.inf
    kind = -1
    ox = o[0] - cx
    oy = o[1] - cy
    a = d[0] * d[0] + d[1] * d[1]
    if a > 1e-12:
        b = ox * d[0] + oy * d[1]
        c = ox * ox + oy * oy - r * r
        disc = b * b - a * c
        if disc >= 0.0:
            t = (-b - np.sqrt(disc)) / a
            if t > EPS:
                z = o[2] + t * d[2]
                if z0 <= z <= z1:
                    best = t
                    kind = 0
    if abs(d[2]) > 1e-12:
        t = (z1 - o[2]) / d[2]
        if EPS < t < best:
            x = ox + t * d[0]
            y = oy + t * d[1]
            if x * x + y * y <= r * r:
                best = t
                kind = 1
    return best, kind


@njit(cache=True)
def _hit_sphere(o, d, g):
    ox = o[0] - g[0]
    oy = o[1] - g[1]
    oz = o[2] - g[2]
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = ox * d[0] + oy * d[1] + oz * d[2]
    c = ox * ox + oy * oy + oz * oz - g[3] * g[3]
    disc = b * b - a * c
    if disc < 0.0:
        return np.inf
    t = (-b - np.sqrt(disc)) / a
    return t if t > EPS else np.inf


@njit(cache=True)
def _surface_colour(tex, base, px, py, pz, nx, ny, nz, seed, out):
    """Albedo of a primitive at local point p with normal n, written into out[0:3]."""
    n = _fbm(px, py, pz, 0.6, seed)
    m = 1.0
    r, g, b = base[0], base[1], base[2]
    if tex == TEX_NOISE:
        m = 1.0 + 0.55 * n
    elif tex == TEX_FACADE:
        m = 1.0 + 0.35 * n + 0.2 * (value_noise(px * 4.0, py * 4.0, pz * 9.0, seed + 5) - 0.5)
        h = px if abs(nx) < 0.5 else py  # horizontal coordinate along the face
        if abs(nz) < 0.5 and pz > 1.2:
            cu = h / 3.1 - np.floor(h / 3.1)
            cv = (pz - 1.2) / 3.2 - np.floor((pz - 1.2) / 3.2)
            if 0.22 < cu < 0.78 and 0.25 < cv < 0.8:
                shade = 0.5 + 0.5 * value_noise(np.floor(h / 3.1), np.floor((pz - 1.2) / 3.2), 0.5, seed + 9)
                r, g, b = 0.12 + 0.2 * shade, 0.16 + 0.2 * shade, 0.22 + 0.22 * shade
                m = 1.0 + 0.2 * n
            elif (0.16 < cu < 0.84 and 0.2 < cv < 0.85):
                r, g, b = 0.85, 0.84, 0.8  # window frame
    elif tex == TEX_TILES:
        m = 1.0 + 0.3 * n
        tu = px / 0.6 - np.floor(px / 0.6)
        tv = py / 0.6 - np.floor(py / 0.6)
        if tu < 0.06 or tv < 0.06:
            m *= 0.7
    elif tex == TEX_CAR:
        m = 1.0 + 0.25 * n
    elif tex == TEX_FOLIAGE:
        m = 1.0 + 0.9 * _fbm(px, py, pz, 0.25, seed + 3)
    elif tex == TEX_SKIN:
        m = 1.0 + 0.15 * n
    out[0] = r * m
    out[1] = g * m
    out[2] = b * m


@njit(cache=True)
def _road_colour(x, y, edge_line, marks, seed, out):
    """Asphalt with a dashed centre line and solid edge lines (painted on Z = 0)."""
    n = _fbm(x, y, 0.0, 0.5, seed + 101)
    c = 0.33 * (1.0 + 0.3 * n + 0.3 * (value_noise(x * 6.0, y * 6.0, 0.0, seed + 102) - 0.5))
    out[0] = c
    out[1] = c
    out[2] = c * 1.04
    if marks != 0:
        paint = False
        if abs(y) < 0.075 and (x / 6.0 - np.floor(x / 6.0)) < 0.5:
            paint = True
        if edge_line > 0.0 and abs(abs(y) - edge_line) < 0.08:
            paint = True
        if paint:
            w = 0.85 * (1.0 + 0.15 * n)
            out[0] = w
            out[1] = w
            out[2] = w * 0.95


@njit(cache=True)
def _sky_colour(px, py, pz, z_top, seed, out):
    """Blue gradient by height on the sky box with soft clouds; a function of the point only, so
    the sky reprojects consistently like every other static surface."""
    e = min(max(pz / z_top, 0.0), 1.0)
    cloud = max(_fbm(px, py, pz, 40.0, seed + 200) + 0.05, 0.0) * 1.6
    out[0] = 0.55 - 0.25 * e + cloud
    out[1] = 0.7 - 0.2 * e + cloud
    out[2] = 0.92 - 0.05 * e + cloud * 0.8


@njit(cache=True)
def render_kernel(origin, R, Kinv, uv, point_group, group_ptr, group_prims, kind, geom, colour, texture, label, instance, offset,
                  tex_seed, ground, road_half, ground_outer_label, marks, edge_line, sky_box, sun, ambient, seed, ground_label,
                  rgb, depth, lab, inst):
    """For each image point uv[n] = (u, v) (pixel units, N points) fill rgb float32 [N, 3] (0..1),
    depth float32 [N], lab uint8 [N], inst int32 [N]. Point n is tested only against the
    primitives group_prims[group_ptr[g]:group_ptr[g + 1]] of its group g = point_group[n]
    (ascending indices, so ties resolve as in a test against all primitives)."""
    d = np.empty(3)
    dc = np.empty(3)
    alb = np.empty(3)
    for n in range(uv.shape[0]):
        u = uv[n, 0]
        v = uv[n, 1]
        for a in range(3):
            dc[a] = Kinv[a, 0] * u + Kinv[a, 1] * v + Kinv[a, 2]
        for a in range(3):
            d[a] = R[a, 0] * dc[0] + R[a, 1] * dc[1] + R[a, 2] * dc[2]
        # sky: exit of the world-fixed sky box (the camera is inside it)
        t_sky = np.inf
        for a in range(3):
            if d[a] > 1e-12:
                t = (sky_box[a + 3] - origin[a]) / d[a]
            elif d[a] < -1e-12:
                t = (sky_box[a] - origin[a]) / d[a]
            else:
                t = np.inf
            if t < t_sky:
                t_sky = t
        best = t_sky
        hit = -2  # -2 sky, -1 ground, >= 0 primitive
        nx = 0.0
        ny = 0.0
        nz = 1.0
        if ground != 0 and d[2] < -1e-12:
            t = -origin[2] / d[2]
            if EPS < t < best:
                best = t
                hit = -1
        grp = point_group[n]
        for kk in range(group_ptr[grp], group_ptr[grp + 1]):
            k = group_prims[kk]
            g = geom[k]
            if kind[k] == BOX:
                t, axis, s = _hit_box(origin, d, g)
                if t < best:
                    best = t
                    hit = k
                    nx = s if axis == 0 else 0.0
                    ny = s if axis == 1 else 0.0
                    nz = s if axis == 2 else 0.0
            elif kind[k] == CYLINDER:
                t, part = _hit_cylinder(origin, d, g)
                if t < best:
                    best = t
                    hit = k
                    if part == 1:
                        nx, ny, nz = 0.0, 0.0, 1.0
                    else:
                        px = origin[0] + t * d[0] - g[0]
                        py = origin[1] + t * d[1] - g[1]
                        nx, ny, nz = px / g[2], py / g[2], 0.0
            else:
                t = _hit_sphere(origin, d, g)
                if t < best:
                    best = t
                    hit = k
                    nx = (origin[0] + t * d[0] - g[0]) / g[3]
                    ny = (origin[1] + t * d[1] - g[1]) / g[3]
                    nz = (origin[2] + t * d[2] - g[2]) / g[3]
        px = origin[0] + best * d[0]
        py = origin[1] + best * d[1]
        pz = origin[2] + best * d[2]
        depth[n] = best
        if hit == -2:
            _sky_colour(px, py, pz, sky_box[5], seed, alb)
            lab[n] = SKY
            inst[n] = SKY
            for a in range(3):
                rgb[n, a] = alb[a]
            continue
        if hit == -1:
            _road_colour(px, py, edge_line, marks, seed, alb)
            if abs(py) <= road_half:
                lab[n] = ground_label
                inst[n] = ground_label
            else:
                lab[n] = ground_outer_label
                inst[n] = ground_outer_label
        else:
            _surface_colour(texture[hit], colour[hit], px - offset[hit, 0], py - offset[hit, 1],
                            pz - offset[hit, 2], nx, ny, nz, seed + tex_seed[hit], alb)
            lab[n] = label[hit]
            inst[n] = instance[hit]
        shade = ambient + (1.0 - ambient) * max(nx * sun[0] + ny * sun[1] + nz * sun[2], 0.0)
        for a in range(3):
            rgb[n, a] = alb[a] * shade


TILE = 16  # pixels; each tile is tested only against the primitives whose screen box overlaps it


def primitive_bounds(scene: Scene) -> np.ndarray:
    """World axis-aligned bounding boxes of the primitives, float64 [N, 6] (min xyz, max xyz)."""
    g = scene.geom
    lo = np.empty((len(g), 3))
    hi = np.empty((len(g), 3))
    box, cyl, sph = scene.kind == BOX, scene.kind == CYLINDER, scene.kind == SPHERE
    lo[box], hi[box] = g[box, :3], g[box, 3:]
    r = g[cyl, 2]
    lo[cyl] = np.stack([g[cyl, 0] - r, g[cyl, 1] - r, g[cyl, 3]], axis=1)
    hi[cyl] = np.stack([g[cyl, 0] + r, g[cyl, 1] + r, g[cyl, 4]], axis=1)
    r = g[sph, 3:4]
    lo[sph], hi[sph] = g[sph, :3] - r, g[sph, :3] + r
    return np.concatenate([lo, hi], axis=1)


def screen_rects(scene: Scene, K: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """Conservative image-space rectangles (u0, v0, u1, v1) [N, 4] of the primitives: the hull of
    the projected corners of each bounding box (exact for convex sets in front of the camera),
    one pixel wider; a box reaching behind the camera gets the whole plane."""
    b = primitive_bounds(scene)
    corners = np.stack([b[:, [0 if i & 1 == 0 else 3, 1 if i & 2 == 0 else 4, 2 if i & 4 == 0 else 5]]
                        for i in range(8)], axis=1)  # [N, 8, 3]
    T = np.linalg.inv(cam_to_world)
    pc = corners @ T[:3, :3].T + T[:3, 3]  # camera frame [N, 8, 3]
    z = pc[..., 2]
    front = (z > 1e-3).all(axis=1)
    zs = np.where(z > 1e-3, z, 1.0)
    u = (K[0, 0] * pc[..., 0] + K[0, 1] * pc[..., 1]) / zs + K[0, 2]
    v = K[1, 1] * pc[..., 1] / zs + K[1, 2]
    rects = np.stack([u.min(1) - 1, v.min(1) - 1, u.max(1) + 1, v.max(1) + 1], axis=1)
    rects[~front] = (-np.inf, -np.inf, np.inf, np.inf)
    return rects


def _tile_lists(rects: np.ndarray, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr [T + 1], primitive indices) of the primitives overlapping each TILE x TILE tile."""
    ty, tx = -(-H // TILE), -(-W // TILE)
    u0 = (np.arange(tx) * TILE).astype(np.float64)
    v0 = (np.arange(ty) * TILE).astype(np.float64)
    over_u = (rects[None, :, 2] >= u0[:, None]) & (rects[None, :, 0] <= u0[:, None] + TILE)  # [tx, N]
    over_v = (rects[None, :, 3] >= v0[:, None]) & (rects[None, :, 1] <= v0[:, None] + TILE)  # [ty, N]
    over = over_v[:, None, :] & over_u[None, :, :]  # [ty, tx, N]
    counts = over.reshape(ty * tx, -1).sum(axis=1)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    prims = np.nonzero(over.reshape(ty * tx, -1))[1].astype(np.int64)  # row-major: ascending per tile
    return ptr, prims


def render(scene: Scene, K: np.ndarray, cam_to_world: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ray cast `scene` from a camera with pixel intrinsics K (3x3) and pose cam_to_world (4x4).

    size = (H, W). Returns
      rgb       uint8   [H, W, 3]
      depth     float32 [H, W]  z in the camera frame, metres, finite and > 0 everywhere
      label     uint8   [H, W]  Cityscapes labelIds
      instance  int32   [H, W]  Cityscapes instanceIds (labelId*1000+k for things, labelId for stuff)
    """
    H, W = int(size[0]), int(size[1])
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(cam_to_world, dtype=np.float64)
    ptr, prims = _tile_lists(screen_rects(scene, K, T), H, W)
    i, j = np.mgrid[0:H, 0:W]
    group = ((i // TILE) * -(-W // TILE) + j // TILE).ravel().astype(np.int64)
    uv = np.stack([j.ravel() + 0.5, i.ravel() + 0.5], axis=1).astype(np.float64)
    out = _cast(scene, K, T, uv, group, ptr, prims)
    return {"rgb": out["rgb"].reshape(H, W, 3), "depth": out["depth"].reshape(H, W),
            "label": out["label"].reshape(H, W), "instance": out["instance"].reshape(H, W)}


def render_points(scene: Scene, K: np.ndarray, cam_to_world: np.ndarray, uv: np.ndarray) -> dict[str, np.ndarray]:
    """Ray cast the rays through arbitrary image points uv float [N, 2] = (u, v) in pixel units
    (pixel (i, j) has its centre at (j + 0.5, i + 0.5)): rgb uint8 [N, 3], depth float32 [N],
    label uint8 [N], instance int32 [N]. Every ray is tested against every primitive (no tiles),
    which also makes it the reference the tiled `render` must reproduce."""
    uv = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 2)
    n = len(scene.kind)
    return _cast(scene, np.asarray(K, dtype=np.float64), np.asarray(cam_to_world, dtype=np.float64), uv,
                 np.zeros(len(uv), np.int64), np.array([0, n], np.int64), np.arange(n, dtype=np.int64))


def _cast(scene: Scene, K: np.ndarray, T: np.ndarray, uv: np.ndarray, group: np.ndarray, ptr: np.ndarray,
          prims: np.ndarray) -> dict[str, np.ndarray]:
    N = uv.shape[0]
    rgb = np.zeros((N, 3), np.float32)
    depth = np.zeros(N, np.float32)
    lab = np.zeros(N, np.uint8)
    inst = np.zeros(N, np.int32)
    render_kernel(np.ascontiguousarray(T[:3, 3]), np.ascontiguousarray(T[:3, :3]), np.linalg.inv(K), uv, group, ptr,
                  prims, scene.kind, scene.geom, scene.colour, scene.texture, scene.label, scene.instance,
                  scene.offset, scene.tex_seed, int(scene.ground), float(scene.road_half),
                  int(scene.ground_outer_label), int(scene.marks), float(scene.edge_line), scene.sky_box, SUN,
                  AMBIENT, int(scene.seed), int(scene.ground_label), rgb, depth, lab, inst)
    out = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return {"rgb": out, "depth": depth, "label": lab, "instance": inst}
