"""Shard schema: encode/decode round trip and the dense source map rebuilt from layers + affines."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shared.shard_schema import (NO_LAYER, NO_LAYER16, Group, decode_group, encode_group, group_key, no_layer,
                                 source_ids, source_ids_reference)

H, W = 6, 8


def _group() -> Group:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    images = np.stack([np.stack([40 + 10 * xx + 5 * yy + 30 * c + 50 * i for c in range(3)], -1)
                       for i in range(2)]).astype(np.uint8)  # smooth: JPEG keeps it close
    regions = rng.integers(0, 3000, (2, H, W)).astype(np.uint16)
    layers = np.zeros((2, H, W), dtype=np.uint8)
    layers[0, 1:3, 2:5] = 1  # a paste
    layers[1, 5, :] = NO_LAYER  # a row that shows nothing
    meta = {"sources": ["a_000001", "b_000002"],
            "images": [{"base": 0, "layers": [{"source": 0, "affine": [1, 0, 0, 0, 1, 0]},
                                              # flipped, shifted: x -> 7 - x + 0, y -> y + 2
                                              {"source": 1, "affine": [-1, 0, 7, 0, 1, 2]}]},
                       {"base": 1, "layers": [{"source": 1, "affine": [1, 0, 0, 0, 1, 0]}]}]}
    return Group(images, regions, layers, meta)


def test_round_trip_keeps_maps_exact_and_images_close():
    g = _group()
    sample = encode_group(group_key(3, 42), g)
    assert sample["__key__"] == "e03_g0000042" and "." not in sample["__key__"]
    assert all(isinstance(v, bytes) for k, v in sample.items() if k != "__key__")
    assert sorted(sample) == sorted(["__key__", "meta.json"] + [f"{p}{i:02d}.{e}" for i in range(2)
                                                                 for p, e in (("img", "jpg"), ("reg", "png"),
                                                                              ("lay", "png"))])
    back = decode_group(sample)
    assert np.array_equal(back.regions, g.regions) and back.regions.dtype == np.uint16
    assert np.array_equal(back.layers, g.layers) and back.layers.dtype == np.uint8
    assert np.abs(back.images.astype(int) - g.images.astype(int)).mean() < 4  # JPEG: lossy but close
    meta = json.loads(sample["meta.json"])
    assert meta["schema"] == 1 and (meta["height"], meta["width"]) == (H, W)
    assert back.meta["images"] == g.meta["images"]


def test_source_ids_known_answer():
    g = _group()
    sid = source_ids(g.layers, g.meta)
    assert sid.shape == (2, H, W) and sid.dtype == np.int64
    # background pixels show their own position in their base frame
    assert sid[0, 0, 0] == 0 and sid[0, 4, 7] == 4 * W + 7
    assert sid[1, 2, 3] == 1 * H * W + 2 * W + 3
    # pasted pixel (x=3, y=1) of image 0 shows frame 1, pixel (x=7-3, y=1+2)
    assert sid[0, 1, 3] == 1 * H * W + 3 * W + 4
    # a "no source" row, and paste pixels mapped outside the frame are -1
    assert (sid[1, 5] == -1).all()
    g.meta["images"][0]["layers"][1]["affine"] = [1, 0, 0, 0, 1, 5]  # y + 5 leaves the frame for y >= 1
    assert (source_ids(g.layers, g.meta)[0, 1:3, 2:5] == -1).all()


def test_uint16_layer_maps_round_trip():
    g = _group()
    lay = g.layers.astype(np.uint16)
    lay[1, 5, :] = NO_LAYER16
    lay[0, 0, 0] = 300  # a layer beyond uint8 (meta needs as many entries)
    g.meta["images"][0]["layers"] += [{"source": 0, "affine": [1, 0, 0, 0, 1, 0]}] * 299
    g = Group(g.images, g.regions, lay, g.meta)
    back = decode_group(encode_group("e00_g0000000", g))
    assert back.layers.dtype == np.uint16 and np.array_equal(back.layers, lay)
    assert no_layer(back.layers) == NO_LAYER16 and no_layer(_group().layers) == NO_LAYER
    assert (source_ids(back.layers, back.meta)[1, 5] == -1).all()


def test_keys_with_dots_and_wrong_schema_are_rejected():
    g = _group()
    with pytest.raises(ValueError, match="dots"):
        encode_group("e00.g1", g)
    sample = encode_group("e00_g0000001", g)
    sample["meta.json"] = json.dumps(dict(json.loads(sample["meta.json"]), schema=99)).encode()
    with pytest.raises(ValueError, match="schema"):
        decode_group(sample)


def test_source_ids_kernel_matches_the_numpy_definition():
    rng = np.random.default_rng(1)
    h, w, n = 23, 37, 3
    for dtype, none in ((np.uint8, NO_LAYER), (np.uint16, NO_LAYER16)):
        layers = rng.integers(0, 6, (n, h, w)).astype(dtype)
        layers[rng.random((n, h, w)) < 0.1] = none
        images = []
        for i in range(n):
            ls = [{"source": i, "affine": [1, 0, 0, 0, 1, 0]}]
            for _ in range(4):  # scaled, flipped, shifted by fractions: rounding ties included
                s = float(rng.choice([0.5, 1.0, 1.7, 0.25]))
                sign = float(rng.choice([-1.0, 1.0]))
                ls.append({"source": int(rng.integers(0, n)),
                           "affine": [sign / s, 0.0, float(rng.choice([0.5, -3.25, 40.0, 7.123457])), 0.0,
                                      1 / s, float(rng.choice([0.5, -2.0, 3.000001]))]})
            images.append({"base": i, "layers": ls})  # layer index 5 has no entry: no source
        meta = {"sources": ["a", "b", "c"], "images": images}
        fast, ref = source_ids(layers, meta), source_ids_reference(layers, meta)
        assert np.array_equal(fast, ref)
        assert (fast == -1).any() and (fast >= 0).mean() > 0.15
