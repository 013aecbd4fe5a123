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
