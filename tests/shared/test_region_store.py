"""Region store: round trip, byte-identical rewrites, half-written chunks never count as finished."""
from __future__ import annotations

import numpy as np
import pytest

from shared.region_store import (RegionRecord, RegionStore, chunk_is_finished, chunk_name, write_chunk,
                                 write_manifest)


def _records(seed: int, n: int = 2) -> list[RegionRecord]:
    rng = np.random.default_rng(seed)
    return [RegionRecord(f"seq_{i:06d}", rng.uniform(1, 80, (6, 9)).astype(np.float32),
                         rng.integers(0, 5, (6, 9)).astype(np.uint16), {"image": f"/x/{i}.png", "n_regions": 4})
            for i in range(n)]


def test_round_trip_and_determinism(tmp_path):
    recs = _records(0)
    entry = write_chunk(tmp_path / chunk_name(0), recs)
    write_manifest(tmp_path, {"height": 6, "width": 9, "chunks": {chunk_name(0): entry}})
    with RegionStore(tmp_path) as store:
        assert store.size == (6, 9) and store.frame_ids() == ["seq_000000", "seq_000001"]
        r = store.read("seq_000001")
        assert np.array_equal(r.regions, recs[1].regions)
        np.testing.assert_allclose(r.depth, recs[1].depth, rtol=1e-3)  # stored as float16
        assert r.attrs["image"] == "/x/1.png" and r.attrs["n_regions"] == 4
        with pytest.raises(KeyError):
            store.read("missing")
    again = write_chunk(tmp_path / "again.h5", recs)
    assert again["sha256"] == entry["sha256"]  # same input -> same bytes


def test_unlisted_or_corrupt_chunk_is_not_finished(tmp_path):
    entry = write_chunk(tmp_path / chunk_name(0), _records(1))
    manifest = {"height": 6, "width": 9, "chunks": {chunk_name(0): entry}}
    assert chunk_is_finished(tmp_path, chunk_name(0), manifest)
    assert not chunk_is_finished(tmp_path, chunk_name(0), {"chunks": {}})
    p = tmp_path / chunk_name(0)
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    p.write_bytes(bytes(data))
    assert not chunk_is_finished(tmp_path, chunk_name(0), manifest)
    p.write_bytes(bytes(data[:100]))
    assert not chunk_is_finished(tmp_path, chunk_name(0), manifest, verify=False)


def test_chunk_bytes_do_not_depend_on_how_long_a_dataset_object_lives(tmp_path, monkeypatch):
    """A Dask worker's profiler can hold a task's frame, and with it a freshly created dataset, for a
    moment: the chunk must still come out byte for byte the same (it once did not)."""
    import h5py

    rng = np.random.default_rng(0)
    recs = [RegionRecord(f"f{i}", rng.uniform(1, 80, (192, 384)).astype(np.float32),
                         rng.integers(0, 40, (192, 384)).astype(np.uint16), {"image": f"/x/{i}.png"})
            for i in range(3)]
    plain = write_chunk(tmp_path / "plain.h5", recs)
    kept = []
    create = h5py.Group.create_dataset

    def create_and_keep(self, *args, **kwargs):  # every dataset stays referenced until the file closes
        kept.append(create(self, *args, **kwargs))
        return kept[-1]

    monkeypatch.setattr(h5py.Group, "create_dataset", create_and_keep)
    held = write_chunk(tmp_path / "held.h5", recs)
    assert len(kept) == 6
    assert held == plain
def test_a_damaged_chunk_is_refused_when_read_naming_the_file_and_the_repair(tmp_path, monkeypatch):
    """A chunk is verified against the manifest as it is read: one flipped byte (same size) is a
    DataError naming the chunk and the `make regions` that rewrites it, not maps from bad bytes or
    an HDF5 error that names no file."""
    from shared.frames import DataError

    monkeypatch.chdir(tmp_path)  # the recorded OUT, relative as typed, still holds the store
    store = tmp_path / "runs" / "kitti-tiny" / "regions" / "depth-0"
    entry = write_chunk(store / chunk_name(0), _records(2))
    write_manifest(store, {"height": 6, "width": 9, "chunks": {chunk_name(0): entry},
                              "config": {"dataset": "kitti", "data_root": "/data/kitti", "out": "runs",
                                         "demo_size": "tiny", "proposals": "depth"}})
    p = store / chunk_name(0)
    data = bytearray(p.read_bytes())
    for where in (len(data) // 2, 200, len(data) - 10):  # map data, HDF5 structure, the tail
        bad = bytearray(data)
        bad[where] ^= 0x01
        p.write_bytes(bytes(bad))
        with RegionStore(store) as rs, pytest.raises(DataError) as info:
            rs.read("seq_000000")
        assert info.value.path == str(p) and "damaged" in info.value.problem
        assert "`make regions DATASET=kitti DATA_ROOT=/data/kitti DEMO_SIZE=tiny OUT=runs`" in info.value.problem
    p.write_bytes(bytes(data))
    with RegionStore(store) as rs:  # control: the intact chunk reads
        assert rs.read("seq_000000").regions.shape == (6, 9)


def test_chunks_are_verified_again_after_leaving_memory(tmp_path):
    chunks = {}
    for i in range(3):
        recs = [RegionRecord(f"c{i}_{k}", np.full((4, 4), 1.0 + i, np.float32), np.ones((4, 4), np.uint16), {})
                for k in range(2)]
        chunks[chunk_name(i)] = write_chunk(tmp_path / chunk_name(i), recs)
    write_manifest(tmp_path, {"height": 4, "width": 4, "chunks": chunks})
    from shared.frames import DataError

    with RegionStore(tmp_path, keep_open=1) as store:
        assert store.read("c0_0").depth[0, 0] == 1.0
        assert store.read("c1_0").depth[0, 0] == 2.0  # chunk 0 leaves memory
        p = tmp_path / chunk_name(0)
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x01
        p.write_bytes(bytes(data))
        with pytest.raises(DataError, match="damaged"):
            store.read("c0_1")


@pytest.mark.parametrize("unit,factor", [("metres", 1.0), ("millimetres", 1000.0), ("micrometres", 1e6),
                                         ("kilometres", 1e-3), ("megametres", 1e-6)])
def test_no_finite_depth_is_stored_as_inf_or_zero(tmp_path, unit, factor):
    """Depth of 0.5-90 m in any unit comes back as float16 would hold it in metres, times the
    unit: millimetres (up to 90000 > 65504, float16's largest) used to come back as inf."""
    rng = np.random.default_rng(3)
    metres = rng.uniform(0.5, 90.0, (6, 9)).astype(np.float32)
    depth = (metres.astype(np.float64) * factor).astype(np.float32)
    rec = RegionRecord("f", depth, np.ones((6, 9), np.uint16), {"image": "x.png"})
    entry = write_chunk(tmp_path / chunk_name(0), [rec])
    write_manifest(tmp_path, {"height": 6, "width": 9, "chunks": {chunk_name(0): entry}})
    with RegionStore(tmp_path) as store:
        back = store.read("f")
    assert np.isfinite(back.depth).all() and (back.depth > 0).all()
    np.testing.assert_allclose(back.depth, depth, rtol=1e-3)  # float16's precision, at any magnitude
    assert back.attrs == {"image": str(tmp_path / "x.png")}  # the scale is how it was stored, not an attribute;
    # a relative image path is relative to the store (a moved output tree names its own images)


def test_usual_depth_is_stored_as_before(tmp_path):
    """Depth inside float16's range: plain float16, no scale attribute, so existing stores and the
    shards made from them keep their bytes."""
    import h5py

    from shared.region_store import encode_depth

    depth = np.array([[0.1, 1.0], [80.0, 65504.0]], np.float32)
    stored, scale = encode_depth(depth)
    assert scale == 1.0 and stored.dtype == np.float16 and np.array_equal(stored, depth.astype(np.float16))
    stored, scale = encode_depth(depth * 2)  # 131008: over the top
    assert scale == 4.0 and stored.dtype == np.float16 and np.isfinite(stored).all()
    # a power of two changes no digit: each value keeps float16's 11 significant bits
    np.testing.assert_array_equal(stored.astype(np.float32) * 4, depth.astype(np.float16).astype(np.float32) * 2)
    huge_span = np.array([[1e-6, 1e6]], np.float32)  # beyond float16 even scaled: float32
    stored, scale = encode_depth(huge_span)
    assert stored.dtype == np.float32 and scale == 1.0
    write_chunk(tmp_path / "c.h5", [RegionRecord("f", depth, np.ones((2, 2), np.uint16), {})])
    with h5py.File(tmp_path / "c.h5") as h5:
        assert h5["f/depth"].dtype == np.float16 and "depth_scale" not in h5["f"].attrs


def test_chunks_have_the_bytes_hdf5_writes_to_disk_itself(tmp_path):
    """write_chunk builds the file in memory (so a full disk is an OSError, not an HDF5 crash); the
    bytes must be those of HDF5 writing the file itself, as before, so existing stores and the shard
    sets keyed by their checksums stay valid."""
    import hashlib
    import json

    import h5py

    rng = np.random.default_rng(7)
    recs = [RegionRecord(f"seq00_{i:06d}", rng.uniform(2, 300, (48, 96)).astype(np.float32),
                         rng.integers(0, 200, (48, 96)).astype(np.uint16),
                         {"image": f"/data/city/seq00/rgb/{i:06d}.png", "n_regions": 199, "n_superpixels": 512,
                          "infomap_levels": 3, "guard_stops": 0, "params": {"a": [1, 2]}}) for i in range(3)]
    entry = write_chunk(tmp_path / "mine.h5", recs)
    with h5py.File(tmp_path / "hdf5.h5", "w", libver=("earliest", "v110"), track_order=True) as h5:
        for r in recs:
            g = h5.create_group(r.frame_id, track_order=True)
            for name, arr in (("depth", r.depth.astype(np.float16)), ("regions", r.regions)):
                g.create_dataset(name, data=arr, track_times=False, compression="gzip", compression_opts=4,
                                 shuffle=True)
            for k, v in sorted(r.attrs.items()):
                g.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else v
    theirs = (tmp_path / "hdf5.h5").read_bytes()
    assert (tmp_path / "mine.h5").read_bytes() == theirs
    assert entry["sha256"] == hashlib.sha256(theirs).hexdigest() and entry["bytes"] == len(theirs)
