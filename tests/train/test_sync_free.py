"""The training steps never wait for the device: no host reads of tensors in a step, only at the
log (and checkpoint, snapshot) interval.

On the CPU every tensor method that reads a value back to the host (`.item()`, `.tolist()`,
`.cpu()`, `.numpy()`, `bool()`, `float()`, `int()`) is patched to raise or to record the read;
on a GPU machine one step also runs under `torch.cuda.set_sync_debug_mode("error")`, which makes
any synchronising CUDA call fatal.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import torch

from shared.frames import Frame, link_sequences
from shared.imageio import write_png
from shared.nets.depth_net import DepthModel
from shared.nets.semantic_fpn import DenseSwAVNet
from train import contrastive as C
from train import depth as D
from train.positives import Positives
from train.shard_loader import ShardStream, open_shard_set, plan_epoch
from tests.fixtures.toy_shards import build_shard_set

HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


class HostRead(AssertionError):
    pass


@contextmanager
def host_reads(on_read: Callable[[str, torch.Tensor, str], None]) -> Iterator[None]:
    """Patch the host-read methods of torch.Tensor: each call first runs on_read(method, tensor,
    file of the calling frame), in the main thread only (the depth trainer's prefetch thread
    gathers host data)."""
    main = threading.get_ident()
    saved = {name: torch.Tensor.__dict__.get(name) for name in HOST_READS}

    def patched(name: str):
        real = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            if threading.get_ident() == main:
                on_read(name, self, sys._getframe(1).f_code.co_filename)
            return real(self, *args, **kwargs)
        return method

    for name in HOST_READS:
        setattr(torch.Tensor, name, patched(name))
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, old)


def optimiser_step_counters(opt: torch.optim.Optimizer) -> Callable[[torch.Tensor], bool]:
    """Adam keeps its step counts in host tensors (on CUDA too, unless capturable) and reads them
    with .item(): host reads of host memory, not waits for the device."""
    return lambda t: any(t is s.get("step") for s in opt.state.values())


@contextmanager
def no_host_reads(allowed: Callable[[torch.Tensor], bool] = lambda t: False) -> Iterator[list[str]]:
    """Any host read raises HostRead (and is listed, in case something swallows the exception)."""
    seen: list[str] = []

    def on_read(name: str, t: torch.Tensor, caller: str) -> None:
        if not allowed(t):
            seen.append(f"{name} from {caller}")
            raise HostRead(f"Tensor.{name}() called from {caller} during a training step")

    with host_reads(on_read):
        yield seen
    assert seen == []


# ---------------------------------------------------------------------------------------------
# fixtures: a tiny shard set, a tiny video


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    return build_shard_set(tmp_path_factory.mktemp("sync") / "shards", n_groups=4, n_shards=2)


def _contrastive_cfg(shards: Path, out: Path, **kw) -> C.ContrastiveConfig:
    base = dict(shards=str(shards), out=str(out), backbone="resnet18", num_prototypes=20, crop_height=32,
                crop_width=64, epochs=2, max_steps=4, warmup_epochs=0.25, lr=0.05, workers=0, log_every=2,
                checkpoint_every=4, progress=False, seed=1, device="cpu", photometric="device")
    base.update(kw)
    return C.ContrastiveConfig(**base)


def _contrastive_step_parts(cfg: C.ContrastiveConfig, n: int):
    """What train() builds before its loop, and n loader batches."""
    dev = C.setup_device(cfg)
    ss = open_shard_set(cfg.shards)
    aug = C.make_augment(cfg, ss, dev.device)
    torch.manual_seed(cfg.seed)
    model = DenseSwAVNet(cfg.backbone, num_prototypes=cfg.num_prototypes)
    model.to(dev.device, memory_format=dev.memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    setup = C.step_setup(model, cfg, dev, aug)
    stream = ShardStream(plan_epoch(ss, 0, cfg.seed, 1, 0), 0, cfg.seed, 1, aug, cfg.features_per_step, cfg.lam,
                         shuffle_buffer=1)
    batches = [b for _, b in zip(range(n), stream)]
    return dev, model, opt, setup, batches


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> list[Frame]:
    """One sequence of 5 smooth random frames (3 targets); cx off the centre, so a flip changes K."""
    root = tmp_path_factory.mktemp("video")
    rng = np.random.default_rng(0)
    frames = []
    for i in range(5):
        coarse = rng.uniform(0, 255, (9, 13, 3))
        img = np.kron(coarse, np.ones((8, 8, 1)))[:64, :96].astype(np.uint8)  # [64, 96, 3]
        write_png(root / f"{i:03d}.png", img)
        frames.append(Frame(id=f"v_{i:06d}", image=str(root / f"{i:03d}.png"), split="train", sequence="v", index=i,
                            width=96, height=64, fx=0.6, fy=1.2, cx=0.45, cy=0.5))
    return link_sequences(frames)


def _depth_cfg(out: Path, **kw) -> D.DepthTrainConfig:
    base = dict(out=str(out), demo_size="tiny", height=64, width=96, batch_size=2, max_steps=4, log_every=2,
                ckpt_every=4, image_every=0, workers=1, device="cpu")
    base.update(kw)
    return D.resolved(D.DepthTrainConfig(**base))


def _depth_inputs(video: list[Frame], cfg: D.DepthTrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of every target: frames uint8 [B, 3, H, W, 3], cams [B, 3, 3, 3]."""
    from shared.imageio import read_rgb

    by = {f.id: f for f in video}
    targets = [f for f in video if f.prev and f.next]
    rgb = [[read_rgb(by[i].image, size=(cfg.height, cfg.width)) for i in (t.id, t.prev, t.next)] for t in targets]
    K = torch.tensor(np.stack([t.K(cfg.width, cfg.height) for t in targets]), dtype=torch.float32)
    return torch.from_numpy(np.asarray(rgb)), D.camera_tensors(K, cfg.width)


# ---------------------------------------------------------------------------------------------
# the guard itself


def test_the_guard_catches_every_host_read_and_restores_torch():
    t = torch.ones(2)
    reads = [lambda: t[0].item(), lambda: t.tolist(), lambda: t.cpu(), lambda: t.numpy(), lambda: bool(t[0]),
             lambda: float(t[0]), lambda: int(t[0]), lambda: t[0] > 0 and None]
    for read in reads:
        with pytest.raises(HostRead):
            with no_host_reads():
                read()
    with no_host_reads():
        (t * 2 + 1).sum()  # device work only
    assert t[0].item() == 1.0 and "item" not in torch.Tensor.__dict__


def test_the_guard_sees_a_read_deep_inside_the_step(shard_dir, tmp_path, monkeypatch):
    """Negative control: a loss that reads its value back is caught through the whole step."""
    cfg = _contrastive_cfg(shard_dir, tmp_path)
    _, model, opt, setup, batches = _contrastive_step_parts(cfg, 1)
    real = C.dense_swav_loss

    def reading(*args, **kwargs):
        terms = real(*args, **kwargs)
        terms.total.item()
        return terms

    monkeypatch.setattr(C, "dense_swav_loss", reading)
    with pytest.raises(HostRead, match="item"):
        with no_host_reads():
            C.train_step(model, batches[0], Positives.from_batch(batches[0], setup.dev.device), opt, setup)


# ---------------------------------------------------------------------------------------------
# the steps, alone


def test_contrastive_steps_read_nothing_back(shard_dir, tmp_path):
    """Three real steps (colour jitter and blur on the device, forward, dense SwAV loss with
    Sinkhorn, backward, SGD, prototype normalisation) with every host read made fatal."""
    cfg = _contrastive_cfg(shard_dir, tmp_path)
    dev, model, opt, setup, batches = _contrastive_step_parts(cfg, 3)
    assert setup.photometric_on_device  # the on-device photometric path is the one under test
    before = model.prototypes.weight.detach().clone()
    window = C.LogWindow(dev.device, 0)
    with no_host_reads():
        for batch in batches:
            positives = Positives.from_batch(batch, dev.device)
            window.add(C.train_step(model, batch, positives, opt, setup), positives)
    rec = window.close(3, 0, 0.05, 3, 4, 0)  # the log line: the one read back
    assert np.isfinite(rec["loss"]) and rec["pixel_groups"] > 0 and rec["region_groups"] > 0
    assert not torch.equal(before, model.prototypes.weight)


def test_depth_steps_read_nothing_back(video, tmp_path):
    """Three real steps (flip, colour jitter, depth and pose networks, warping at 4 scales,
    auto-masking, Adam) with every host read made fatal, except Adam's host-side step counters."""
    cfg = _depth_cfg(tmp_path, color_aug=1.0, flip=0.5)
    frames, cams = _depth_inputs(video, cfg)
    torch.manual_seed(0)
    model = DepthModel()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    run = D.step_setup(model, cfg, torch.device("cpu"))
    window = D.LogWindow(torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    with no_host_reads(allowed=optimiser_step_counters(opt)):
        for i in range(3):
            loss, _ = D.train_step(model, frames, cams, i, opt, run)
            window.add(loss, 0.0)
    assert np.isfinite(window.mean_loss(3, tmp_path / "checkpoint.pt"))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_depth_step_with_host_inverses_gives_the_loss_of_inverting_on_the_device(video, tmp_path, flip):
    """The trainer inverts each target's K (and its mirror image) once on the host; its loss equals
    the loss with K's inverse computed in the step, exactly; the unmirrored inverse would not."""
    cfg = _depth_cfg(tmp_path, color_aug=1.0, flip=flip)
    frames, cams = _depth_inputs(video, cfg)
    assert not torch.equal(cams[:, 1], cams[:, 2])  # cx off the centre: the mirror changes K^-1
    torch.manual_seed(0)
    model = DepthModel()
    run = D.step_setup(model, cfg, torch.device("cpu"))
    x = frames.permute(0, 1, 4, 2, 3).float() / 255.0
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 5)
    images, inputs, K_seen = D.augment(x, cams[:, 0], gen, cfg.color_aug, cfg.flip)
    state = gen.get_state()
    want, _ = D.depth_losses(model, images, inputs, K_seen, cfg, gen)
    gen.set_state(state)
    unmirrored, _ = D.depth_losses(model, images, inputs, K_seen, cfg, gen, inv_K=cams[:, 1])
    got, _ = D.train_step(model, frames, cams, 5, torch.optim.SGD(model.parameters(), lr=0.0), run)
    assert torch.equal(got, want.detach())
    assert torch.equal(unmirrored, want) == (flip == 0.0)


# ---------------------------------------------------------------------------------------------
# the whole loops: reads only at the intervals


def _count_steps_and_reads(monkeypatch, module, allowed_in_step=lambda opt: (lambda t: False)):
    """Wrap module.train_step: inside it any host read raises; outside, reads made by `module`'s own
    code are recorded with the number of steps done when they happened."""
    state = {"steps": 0, "in_step": False, "allowed": lambda t: False}
    outside: list[tuple[int, str]] = []
    violations: list[str] = []
    real = module.train_step
    own_file = str(Path(module.__file__).resolve())

    def wrapped(model, *args):
        opt = args[-2]
        state["in_step"], state["allowed"] = True, allowed_in_step(opt)
        try:
            return real(model, *args)
        finally:
            state["in_step"] = False
            state["steps"] += 1

    def on_read(name: str, t: torch.Tensor, caller: str) -> None:
        if state["in_step"]:
            if not state["allowed"](t):
                violations.append(f"{name} from {caller} in step {state['steps'] + 1}")
                raise HostRead(violations[-1])
        elif str(Path(caller).resolve()) == own_file:
            outside.append((state["steps"], name))

    monkeypatch.setattr(module, "train_step", wrapped)
    return state, outside, violations, on_read


def test_contrastive_loop_reads_back_only_at_log_and_checkpoint_steps(shard_dir, tmp_path, monkeypatch):
    cfg = _contrastive_cfg(shard_dir, tmp_path, max_steps=6, log_every=3, checkpoint_every=2)
    state, outside, violations, on_read = _count_steps_and_reads(monkeypatch, C)
    with host_reads(on_read):
        C.train(cfg)
    assert state["steps"] == 6 and violations == []
    steps_with_reads = {s for s, _ in outside}
    assert steps_with_reads == {2, 3, 4, 6}  # log lines at 3 and 6; checkpoints between log lines at 2 and 4
    assert ("tolist" in {n for s, n in outside if s == 3}) and ("__bool__" in {n for s, n in outside if s == 2})


def test_depth_loop_reads_back_only_at_log_snapshot_and_checkpoint_steps(video, tmp_path, monkeypatch):
    cfg = _depth_cfg(tmp_path, max_steps=6, log_every=3, ckpt_every=2, image_every=5)
    state, outside, violations, on_read = _count_steps_and_reads(monkeypatch, D, optimiser_step_counters)
    with host_reads(on_read):
        D.train(cfg, video, echo=lambda s: None)
    assert state["steps"] == 6 and violations == []
    # log lines at 3 and 6, checkpoint checks at 2 and 4, snapshots at 5 and 6, the summary at 6
    assert {s for s, _ in outside} == {2, 3, 4, 5, 6}


# ---------------------------------------------------------------------------------------------
# on a GPU: one step with synchronising CUDA calls made fatal

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _pinned(batch: dict) -> dict:
    return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}


@contextmanager
def cuda_syncs_fatal() -> Iterator[None]:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@cuda_only
def test_contrastive_step_on_cuda_never_synchronises(shard_dir, tmp_path):
    cfg = _contrastive_cfg(shard_dir, tmp_path, device="cuda", photometric="auto")
    dev, model, opt, setup, batches = _contrastive_step_parts(cfg, 2)
    assert setup.photometric_on_device and dev.memory_format == torch.channels_last
    window = C.LogWindow(dev.device, 1)
    warm, batch = (_pinned(b) for b in batches)
    C.train_step(model, warm, Positives.from_batch(warm, dev.device), opt, setup)  # cuDNN autotuning, lazy init
    with cuda_syncs_fatal():
        positives = Positives.from_batch(batch, dev.device)
        window.add(C.train_step(model, batch, positives, opt, setup), positives)
    assert np.isfinite(window.close(2, 0, 0.05, 2, 4, 1)["loss"])


@cuda_only
def test_depth_step_on_cuda_never_synchronises(video, tmp_path):
    cfg = _depth_cfg(tmp_path, device="cuda", color_aug=1.0, flip=0.5)
    frames, cams = _depth_inputs(video, cfg)
    frames, cams = frames.pin_memory(), cams.pin_memory()
    device = torch.device("cuda")
    model = DepthModel().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    run = D.step_setup(model, cfg, device)
    window = D.LogWindow(device)
    D.train_step(model, frames, cams, 0, opt, run)  # cuDNN autotuning, lazy init, Adam's state
    with cuda_syncs_fatal():
        loss, _ = D.train_step(model, frames, cams, 1, opt, run)
        window.add(loss, 0.0)
    assert np.isfinite(window.mean_loss(2, tmp_path / "checkpoint.pt"))
