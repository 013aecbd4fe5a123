"""The data path: augmentation keeps maps aligned with images, positive groups only join locations
that truly share a source pixel / region, and the stream is resumable at any step."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from shared.frames import DataError
from shared.shard_schema import decode_group, source_ids
from train.shard_loader import (Augment, ShardStream, collate_groups, make_loader, open_shard_set,
                                plan_epoch, prepare_group)
from tests.fixtures.toy_shards import make_group

H, W = 64, 128


def _raw_samples(root):
    return list(wds.tarfile_to_samples()(iter([{"url": str(p)} for p in sorted(root.glob("*.tar"))])))


def _fixture_of(key: str, root_seed: int = 0):
    g = int(key.split("_g")[1])
    return make_group(root_seed * 100003 + g)


def _check_groups(index, group, keys_flat):
    """every group's members share one key, and no key is split across two groups"""
    k = keys_flat[index]
    for gid in group.unique():
        assert k[group == gid].unique().numel() == 1
        assert (group == gid).sum() >= 2
    assert k.unique().numel() == group.unique().numel()


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_positive_groups_match_stored_maps(tiny_shards, flip):
    """Identity crop (with or without a mirror): feature (b, y, x) sees stored pixel
    (4y + 2, 4x + 2) (mirrored: column W - 1 - (4x + 2)); check the groups against the stored maps."""
    aug = Augment(H, W, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=flip, jitter=0.0, blur=0.0)
    sample = _raw_samples(tiny_shards)[0]
    group = prepare_group(sample, aug, np.random.default_rng(0))
    batch = collate_groups([group], 288000, 0.5, torch.Generator().manual_seed(0), keep_keys=True)
    g = decode_group(sample)
    src = source_ids(g.layers, g.meta)  # [N, H, W]
    hf, wf = H // 4, W // 4
    rows = torch.arange(hf) * 4 + 2
    cols = torch.arange(wf) * 4 + 2
    if flip:
        cols = W - 1 - cols
    stored_src = torch.from_numpy(src)[:, rows[:, None], cols[None, :]].flatten()  # [N*hf*wf]
    stored_reg = torch.from_numpy(g.regions.astype(np.int64))[:, rows[:, None], cols[None, :]].flatten()
    pi, pg = batch["pixel_index"], batch["pixel_group"]
    ri, rg = batch["region_index"], batch["region_group"]
    assert pi.numel() > 100 and ri.numel() > 100 and batch["pixel_groups"] > 10
    _check_groups(pi, pg, batch["pixel_keys"].flatten())
    _check_groups(ri, rg, batch["region_keys"].flatten())
    # pixel groups: same source frame and same 4x4 cell of it, from the stored maps alone
    s = stored_src[pi]
    assert (s >= 0).all()
    frame, y, x = s // (H * W), (s % (H * W)) // W, s % W
    cell = frame * 10_000 + (y // 4) * 100 + x // 4
    for gid in pg.unique():
        assert cell[pg == gid].unique().numel() == 1
    # several images take part: the groups cross images, which is the point
    assert (pi // (hf * wf))[pg == pg[0]].numel() >= 2
    assert (pi // (hf * wf)).unique().numel() == g.n_images
    # region groups: one stored region id (> 0) each
    r = stored_reg[ri]
    assert (r > 0).all()
    for gid in rg.unique():
        assert r[rg == gid].unique().numel() == 1
    # the no-source strip at the bottom is never sampled
    ys = (pi % (hf * wf)) // wf
    assert (ys < (H - 4) // 4).all()


def test_random_crops_keep_image_and_maps_aligned(tiny_shards):
    """With random crops, scales and flips, the colour a feature location sees equals the fixture's
    source-frame colour at the source pixel its map names (the fixture textures are smooth)."""
    aug = Augment(H, W, jitter=0.0, blur=0.0)  # crops, rescales and flips on
    sample = _raw_samples(tiny_shards)[1]
    _, src_img, src_reg = _fixture_of(sample["__key__"])
    g = decode_group(sample)
    src = source_ids(g.layers, g.meta)
    from train.shard_loader import augment_image
    rng = np.random.default_rng(5)
    errs, errs_wrong = [], []
    for i in range(g.n_images):
        img, sf, rf, _ = augment_image(g.images[i], src[i], g.regions[i], rng, aug)
        ok = sf >= 0
        s = sf[ok]
        frame, y, x = s // (H * W), (s % (H * W)) // W, s % W
        seen = img[:, 2::4, 2::4].permute(1, 2, 0)[ok].float()  # [m, 3] colour at each cell's centre
        truth = torch.from_numpy(src_img)[frame, y, x].float()
        errs.append((seen - truth).abs().mean().item())
        wrong = torch.from_numpy(src_img)[frame, y, W - 1 - x].float()  # a mirrored map would see this
        errs_wrong.append((seen - wrong).abs().mean().item())
        assert torch.equal(torch.from_numpy(src_reg.astype(np.int64))[frame, y, x], rf[ok])
    assert np.mean(errs) < 8.0
    assert np.mean(errs_wrong) > 4 * np.mean(errs)


def test_fewer_shards_than_workers_is_a_clear_error(tiny_shards):
    ss = open_shard_set(tiny_shards)
    with pytest.raises(DataError, match="every worker needs at least one shard"):
        plan_epoch(ss, 0, 0, 1, workers=4)


def test_missing_or_truncated_shard_is_named(tmp_path):
    from tests.fixtures.toy_shards import build_shard_set
    root = build_shard_set(tmp_path / "s", n_groups=2, n_shards=2)
    p = root / "shard-000001.tar"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match="shard-000001.tar.*truncated"):
        open_shard_set(root)


def test_plan_splits_by_rank_and_worker(tiny_shards):
    ss = open_shard_set(tiny_shards)
    a = plan_epoch(ss, 3, 7, 1, workers=1, rank=0, world=2)
    b = plan_epoch(ss, 3, 7, 1, workers=1, rank=1, world=2)
    assert a.steps == b.steps == 2  # ranks hold 2 and 1 shards of 2 groups: both stop at 2 steps
    assert not set(a.worker_shards[0]) & set(b.worker_shards[0])


def _epoch(plan, start, workers, aug):
    stream = ShardStream(plan, start, seed=11, groups_per_step=1, aug=aug, features_per_step=288000,
                         lam=0.5, shuffle_buffer=4)
    return list(make_loader(stream, workers, pin_memory=False))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resumes_exactly(tiny_shards, workers):
    aug = Augment(H, W)
    plan = plan_epoch(open_shard_set(tiny_shards), 0, 11, 1, workers)
    full = _epoch(plan, 0, workers, aug)
    assert len(full) == plan.steps >= 3
    assert len({b["keys"][0] for b in full}) == len(full)  # no group twice
    for c in (1, plan.steps - 1):
        rest = _epoch(plan, c, workers, aug)
        assert [b["keys"] for b in rest] == [b["keys"] for b in full[c:]]
        for x, y in zip(rest, full[c:]):
            assert torch.equal(x["images"], y["images"])
            assert torch.equal(x["pixel_index"], y["pixel_index"])
            assert torch.equal(x["region_group"], y["region_group"])


def test_photometric_in_worker_equals_on_device(tiny_shards):
    """The two places colour jitter and blur can run give the same images (up to uint8 rounding)."""
    from shared.photometric import apply_photometric, to_uint8
    sample = _raw_samples(tiny_shards)[2]
    aug_w = Augment(H, W, jitter=1.0, blur=1.0)
    aug_d = dataclasses.replace(aug_w, photometric_in_worker=False)
    w = prepare_group(sample, aug_w, np.random.default_rng(4))
    d = prepare_group(sample, aug_d, np.random.default_rng(4))
    assert torch.equal(w["pixel_keys"], d["pixel_keys"])
    assert (w["photometric"] == torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])).all()
    assert (d["photometric"][:, 4] > 0).all()  # blur drawn for every image
    on_device = to_uint8(apply_photometric(d["images"], d["photometric"], aug_d.blur_sigma[1]))
    assert torch.equal(on_device, w["images"])
    assert (on_device.float() - d["images"].float()).abs().mean() > 1.0  # and it did change them


# ---------------------------------------------------------------------------------------------
# integrity: every shard verified as it streams; a damaged one stops the run, none of it trained on

def _damage(root, name: str, member_suffix: str, how: str) -> None:
    """Change one byte of `name`'s first member ending in member_suffix, keeping the size: `flip`
    inverts a byte in the middle of its data, `digit` turns the first digit after "affine" into
    another digit (a same-size change of a meta.json affine)."""
    import tarfile as tf

    p = root / name
    data = bytearray(p.read_bytes())
    with tf.open(p) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(member_suffix))
    start, end = member.offset_data, member.offset_data + member.size
    if how == "flip":
        data[(start + end) // 2] ^= 0xFF
    else:
        i = data.index(b'"affine"', start, end)
        i = next(j for j in range(i, end) if chr(data[j]).isdigit())
        data[i] = ord("7") if data[i] != ord("7") else ord("3")
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("member,how", [("img00.jpg", "flip"), ("meta.json", "digit"), ("reg01.png", "flip")])
@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_shard_stops_the_stream_and_none_of_it_is_used(tmp_path, member, how, workers):
    from tests.fixtures.toy_shards import build_shard_set
    from train.shard_loader import check_batch

    root = build_shard_set(tmp_path / "s", n_groups=4, n_shards=2)
    plan = plan_epoch(open_shard_set(root), 0, 0, 1, workers=1)
    last = Path(plan.worker_shards[0][-1])  # damaged: the shard read second
    size = last.stat().st_size
    _damage(root, last.name, member, how)
    assert last.stat().st_size == size  # the size check alone cannot see it
    plan = plan_epoch(open_shard_set(root), 0, 0, 1, workers=1)
    stream = ShardStream(plan, 0, seed=0, groups_per_step=1, aug=Augment(H, W), features_per_step=288000,
                         lam=0.5, shuffle_buffer=1)
    keys = []
    with pytest.raises(DataError) as info:
        for batch in make_loader(stream, workers, pin_memory=False):
            keys += check_batch(batch)["keys"]
    assert info.value.path == str(last)
    assert "damaged" in info.value.problem and "`make shards" in info.value.problem
    damaged = {s["__key__"] for s in _raw_samples_of(last)}
    assert len(keys) == 2 and not set(keys) & damaged  # the intact shard streamed, nothing of the damaged one


def _raw_samples_of(path):
    return list(wds.tarfile_to_samples()(iter([{"url": str(path)}])))


def test_verified_samples_equal_webdataset_samples(tiny_shards):
    from train.shard_loader import verified_samples

    ss = open_shard_set(tiny_shards)
    ours = list(verified_samples([(str(tiny_shards / n), ss.sha256[n]) for n, _ in ss.shards]))
    theirs = _raw_samples(tiny_shards)
    assert [s["__key__"] for s in ours] == [s["__key__"] for s in theirs]
    for a, b in zip(ours, theirs):
        assert {k: v for k, v in a.items() if not k.startswith("__")} == \
            {k: v for k, v in b.items() if not k.startswith("__")}


def test_the_shard_set_digest_follows_the_listed_checksums(tmp_path):
    import json
    from tests.fixtures.toy_shards import build_shard_set

    root = build_shard_set(tmp_path / "s", n_groups=2, n_shards=2)
    before = open_shard_set(root).digest
    assert open_shard_set(root).digest == before  # stable
    m = json.loads((root / "manifest.json").read_text())
    m["shards"][0]["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(m))
    assert open_shard_set(root).digest != before
    del m["shards"][0]["sha256"]
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="no sha256"):
        open_shard_set(root)
