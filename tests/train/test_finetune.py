"""Fine-tuning: label subsets, folds, the loss, initialisation from our checkpoints, a few CPU steps
that lower the loss, and resume to the uninterrupted run's losses (a hand-made KITTI semantics set)."""
from __future__ import annotations

import json
import math
from fractions import Fraction

import click
import numpy as np
import pytest
import torch

from shared.datasets import build_index
from shared.finetune_data import kfold, make_folds, parse_label_fraction, seeded_subset
from shared.frames import Frame
from shared.labels import decode_instances, instance_masks
from shared.nets.semantic_fpn import DenseSwAVNet
from tests.kitti_semantics_fixture import make_kitti_semantics
from train import finetune as FT
from train.finetune_samples import instance_targets


def _frames(n_train: int, n_val: int) -> list[Frame]:
    def f(i: int, split: str) -> Frame:
        return Frame(id=f"{split}{i:03d}", image="x.png", split=split, sequence="s", index=i, width=8, height=4,
                     fx=1, fy=1, cx=0.5, cy=0.5, semantic="l.png", instance="i.png")
    return [f(i, "train") for i in range(n_train)] + [f(i, "val") for i in range(n_val)]


@pytest.mark.parametrize("text, value", [("1/16", Fraction(1, 16)), ("0.25", Fraction(1, 4)), ("1", Fraction(1)),
                                         ("50", 50), ("2", 2)])
def test_label_fraction_parses(text, value):
    assert parse_label_fraction(text) == value


@pytest.mark.parametrize("text", ["0", "0/4", "3/2", "1.5", "-1", "abc", "1/0", ""])
def test_label_fraction_refuses_out_of_range(text):
    with pytest.raises(ValueError, match="--label-fraction"):
        parse_label_fraction(text)


def test_subsets_are_deterministic_nested_and_disjoint_from_val():
    frames = _frames(48, 7)
    a = make_folds(frames, "semantic", Fraction(1, 16), 0, seed=3)
    b = make_folds(frames, "semantic", Fraction(1, 16), 0, seed=3)
    assert [f.id for f in a[0].train] == [f.id for f in b[0].train]
    assert len(a[0].train) == 3 and a[0].pool == 48  # 48 / 16
    assert {f.id for f in a[0].val} == {f"val{i:03d}" for i in range(7)}
    assert not {f.id for f in a[0].train} & {f.id for f in a[0].val}
    assert all(f.split == "train" for f in a[0].train)
    other = make_folds(frames, "semantic", Fraction(1, 16), 0, seed=4)
    assert [f.id for f in other[0].train] != [f.id for f in a[0].train]
    ids = [f.id for f in frames if f.split == "train"]
    small, big = set(seeded_subset(ids, Fraction(1, 8), 5)), set(seeded_subset(ids, Fraction(1, 2), 5))
    assert len(small) == 6 and len(big) == 24 and small < big  # the same seed: 1/8 inside 1/2
    assert len(seeded_subset(ids, 10, 5)) == 10
    with pytest.raises(ValueError, match="--label-fraction"):
        seeded_subset(ids, 49, 5)


def test_folds_partition_the_labelled_frames():
    frames = _frames(23, 0)  # like KITTI: everything "train", no val split
    folds = make_folds(frames, "semantic", Fraction(1, 2), 5, seed=0)
    vals = [{f.id for f in fo.val} for fo in folds]
    assert sorted(len(v) for v in vals) == [4, 4, 5, 5, 5]
    assert set().union(*vals) == {f.id for f in frames} and sum(map(len, vals)) == 23  # disjoint, covering
    for fo, v in zip(folds, vals):
        assert not {f.id for f in fo.train} & v and len(fo.train) == round(fo.pool / 2)
    assert kfold([f.id for f in frames], 5, 0) == kfold([f.id for f in frames], 5, 0)
    with pytest.raises(Exception, match="val"):
        make_folds(frames, "semantic", Fraction(1), 0, seed=0)  # no val split and no --folds


def test_semantic_loss_known_answers():
    target = torch.tensor([[[0, 1], [2, 255]]])  # [1, 2, 2], one ignored pixel
    uniform = torch.zeros(1, 5, 2, 2)
    assert FT.semantic_loss(uniform, target).item() == pytest.approx(math.log(5))
    confident = torch.full((1, 5, 2, 2), -30.0)
    for (y, x), c in {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 4}.items():
        confident[0, c, y, x] = 30.0  # the ignored pixel is confidently wrong: it must not count
    assert FT.semantic_loss(confident, target).item() == pytest.approx(0.0, abs=1e-6)
    assert FT.semantic_loss(uniform, torch.full((1, 2, 2), 255)).item() == 0.0


def test_instance_decoding_of_both_encodings():
    city = np.array([[26000, 26001, 7], [24000, 26, 0]])
    labels, key = decode_instances(city, "cityscapes")
    assert labels.tolist() == [[26, 26, 7], [24, 26, 0]]
    assert (key > 0).tolist() == [[True, True, False], [True, False, False]] and key[0, 0] != key[0, 1]
    kitti = np.array([[26 * 256 + 1, 26 * 256 + 2, 7 * 256], [24 * 256 + 1, 26 * 256, 0]])
    classes, masks, crowd = instance_masks(kitti, "kitti")
    assert sorted(classes.tolist()) == [1, 3, 3]  # person = class 1, car = class 3
    assert masks.sum() == 3 and crowd[3].tolist() == [[False, False, False], [False, True, False]]
    t = instance_targets(np.array([[26 * 256 + 1] * 4 + [0] * 4] * 3, np.int64), "kitti")
    assert t["boxes"].tolist() == [[0.0, 0.0, 4.0, 3.0]] and t["labels"].tolist() == [3]


def test_kitti_semantics_reader(tmp_path):
    make_kitti_semantics(tmp_path / "k", n=3)
    frames = build_index("kitti-semantic", tmp_path / "k")
    assert [f.id for f in frames] == ["training_000000_10", "training_000001_10", "training_000002_10"]
    assert all(f.split == "train" and f.semantic and f.instance and (f.height, f.width) == (64, 128) for f in frames)


def test_options_are_refused_with_the_option_named():
    for kw, name in [(dict(batch_size=0), "--batch-size"), (dict(crop_height=100), "--crop-height"),
                     (dict(scale_range=(2.0, 1.0)), "--scale-range"), (dict(folds=1), "--folds"),
                     (dict(label_fraction="2/1"), "--label-fraction"), (dict(new_lr=-1.0), "--new-lr"),
                     (dict(colour_jitter=1.5), "--colour-jitter"), (dict(momentum=1.0), "--momentum")]:
        with pytest.raises(click.BadParameter) as e:
            FT.check_options(FT.FinetuneConfig(**kw))
        assert f"'{name}'" in e.value.format_message()


def test_a_bound_has_one_error_text_on_the_command_line_and_in_the_trainer():
    from click.testing import CliRunner

    from train.finetune_command import finetune_command

    for option, kw in [("--new-lr", dict(new_lr=11.0)), ("--weight-decay", dict(weight_decay=1.0)),
                       ("--batch-size", dict(batch_size=0))]:
        with pytest.raises(click.BadParameter) as e:
            FT.check_options(FT.FinetuneConfig(**kw))
        value = str(next(iter(kw.values())))
        cli = CliRunner().invoke(finetune_command, [option, value])
        assert cli.exit_code == 2 and e.value.format_message() in " ".join(cli.output.split()), cli.output


def _pretrained_checkpoint(path, arch="resnet18"):
    """A pre-training checkpoint whose every tensor differs from a fresh network's."""
    torch.manual_seed(123)
    net = DenseSwAVNet(arch, num_prototypes=10)
    sd = {k: (v + 1.0 if v.is_floating_point() else v + 7) for k, v in net.state_dict().items()}
    torch.save({"model": sd, "net_args": net.net_args, "config": {"backbone": arch}}, path)
    return sd


def _changed(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return {k for k in sa if not torch.equal(sa[k], sb[k])}


def test_checkpoint_init_changes_exactly_the_pretrained_modules(tmp_path):
    src = _pretrained_checkpoint(tmp_path / "ckpt.pt")
    scratch, none = FT.initial_model("semantic", "resnet18", 19, None, seed=0)
    again, _ = FT.initial_model("semantic", "resnet18", 19, None, seed=0)
    assert none == set() and _changed(scratch, again) == set()  # scratch loads nothing
    model, loaded = FT.initial_model("semantic", "resnet18", 19, tmp_path / "ckpt.pt", seed=0)
    changed = _changed(scratch, model)
    expected = {k for k in model.state_dict() if k.split(".")[0] in ("backbone", "fpn", "head")}
    assert changed == expected and not any(k.startswith("classifier") for k in changed)
    assert loaded == {n for n, _ in model.named_parameters() if n.split(".")[0] in ("backbone", "fpn", "head")}
    assert torch.equal(model.state_dict()["head.scale_heads.1.0.weight"], src["head.scale_heads.1.0.weight"])

    # Mask R-CNN: the backbone body and the FPN, nothing of the RPN or the ROI heads
    mscratch, _ = FT.initial_model("instance", "resnet18", 9, None, seed=0)
    mmodel, mloaded = FT.initial_model("instance", "resnet18", 9, tmp_path / "ckpt.pt", seed=0)
    changed = _changed(mscratch, mmodel)
    assert changed == {k for k in mmodel.state_dict() if k.startswith(("backbone.body.", "backbone.fpn."))}
    assert torch.equal(mmodel.state_dict()["backbone.fpn.inner_blocks.0.0.weight"], src["fpn.inner_blocks.0.0.weight"])

    # a torchvision-format ResNet file: the backbone only
    torch.save({k.removeprefix("backbone."): v for k, v in src.items() if k.startswith("backbone.")}, tmp_path / "tv.pth")
    tv, tv_loaded = FT.initial_model("semantic", "resnet18", 19, tmp_path / "tv.pth", seed=0)
    assert _changed(scratch, tv) == {k for k in tv.state_dict() if k.startswith("backbone.")}


def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    _pretrained_checkpoint(tmp_path / "ckpt.pt")
    with pytest.raises(Exception, match="does not fit"):
        FT.initial_model("semantic", "resnet50", 19, tmp_path / "ckpt.pt", seed=0)


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    return make_kitti_semantics(tmp_path_factory.mktemp("kitti") / "data_semantics", n=6)


def _cfg(root, out, **kw):
    base = dict(dataset="kitti-semantic", data_root=str(root), out=str(out), init="scratch", backbone="resnet18",
                folds=2, label_fraction="1", iterations=8, batch_size=2, crop_height=64, crop_width=128,
                scale_range=(0.75, 1.25), warmup_steps=1, new_lr=0.05, workers=0, log_every=1, checkpoint_every=3,
                progress=False, seed=1)
    base.update(kw)
    return FT.FinetuneConfig(**base)


def _losses(path):
    return [json.loads(ln)["loss"] for ln in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(kitti_root, tmp_path_factory):
    torch.set_num_threads(1)
    return FT.finetune(_cfg(kitti_root, tmp_path_factory.mktemp("full")))


def test_a_few_cpu_steps_lower_the_loss(full_run):
    for fold in (0, 1):
        loss = _losses(full_run / f"f{fold}_r0" / "log.jsonl")
        assert len(loss) == 8 and all(math.isfinite(v) for v in loss)
        assert np.mean(loss[-2:]) < np.mean(loss[:2]) - 0.2
    plan = json.loads((full_run / "plan.json").read_text())
    for fo in plan["folds"]:
        assert not {f["id"] for f in fo["train"]} & {f["id"] for f in fo["val"]}
    assert (full_run / "train_frames_f0.txt").read_text().split() == [f["id"] for f in plan["folds"][0]["train"]]


def test_resume_reproduces_the_uninterrupted_losses(kitti_root, tmp_path, full_run, capsys):
    cfg = _cfg(kitti_root, tmp_path, stop_after=4)
    run = FT.finetune(cfg)
    assert len(_losses(run / "f0_r0" / "log.jsonl")) == 4 and not (run / "f1_r0").exists()
    capsys.readouterr()
    FT.finetune(_cfg(kitti_root, tmp_path))  # resumes fold 0 at step 4, then fold 1
    for fold in (0, 1):
        assert _losses(run / f"f{fold}_r0" / "log.jsonl") == pytest.approx(
            _losses(full_run / f"f{fold}_r0" / "log.jsonl"), rel=1e-5)
    said = capsys.readouterr().out.strip().splitlines()
    assert said[0].startswith("finetune: plan: semantic, init scratch, label fraction 1: ") and \
        "2 network(s) of 8 steps, batch 2, crop 64x128, resnet18 on cpu" in said[0]
    # 16 steps, 4 done before this run: the estimate is timed over steps 2-4 of this run, 8 are left
    assert sum("s/step over the first 3 steps: about" in line and line.endswith("for the remaining 8")
               for line in said) == 1
    assert said[-1].startswith("finetune: finished 2 network(s) in ") and f"into {run};" in said[-1]
    FT.finetune(_cfg(kitti_root, tmp_path))
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("finetune: nothing to do in ")


def test_instance_task_trains_a_few_steps(kitti_root, tmp_path):
    run = FT.finetune(_cfg(kitti_root, tmp_path, task="instance", iterations=2, new_lr=0.01, grad_clip=10.0,
                           stop_after=2))  # fold 0 only
    loss = _losses(run / "f0_r0" / "log.jsonl")
    assert len(loss) == 2 and all(math.isfinite(v) for v in loss)
