"""DEMO_SIZE presets fill only the options the user did not set, through the real commands' parsing."""
from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from shared.config import field
from shared.presets import apply_preset
from shared.stage import StageConfig


@pytest.fixture
def contrastive_config(monkeypatch):
    """Run the real `contrastive` command, catching the config it would train (no training)."""
    import train.contrastive as C
    from train.contrastive_command import contrastive

    seen: list[C.ContrastiveConfig] = []
    monkeypatch.setattr(C, "train", seen.append)  # the command imports the trainer when it runs

    def parse(args: list[str]):
        result = CliRunner().invoke(contrastive, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return seen.pop(), result.output

    return parse


def test_typed_options_survive_the_tiny_preset(contrastive_config):
    """The case of issue 11: tiny used to train resnet18 / 100 prototypes / 2 epochs here."""
    from train.contrastive import PRESETS

    cfg, said = contrastive_config(["--demo-size", "tiny", "--backbone", "resnet50", "--num-prototypes", "1000",
                                    "--epochs", "20"])
    assert (cfg.backbone, cfg.num_prototypes, cfg.epochs) == ("resnet50", 1000, 20)
    tiny = PRESETS["tiny"]
    untyped = {k: v for k, v in tiny.items() if k not in ("backbone", "num_prototypes", "epochs")}
    assert untyped  # the preset still has fields to fill
    assert {k: getattr(cfg, k) for k in untyped} == untyped
    assert "backbone" not in said and "max_steps=6" in said  # the echo lists what the preset changed


def test_untyped_options_take_the_preset_and_no_preset_changes_nothing(contrastive_config):
    from train.contrastive import PRESETS, ContrastiveConfig

    cfg, _ = contrastive_config(["--demo-size", "tiny"])
    assert {k: getattr(cfg, k) for k in PRESETS["tiny"]} == PRESETS["tiny"]
    cfg, said = contrastive_config([])
    assert cfg == ContrastiveConfig() and "preset" not in said


def test_a_typed_value_equal_to_the_default_is_still_the_users(contrastive_config):
    """The old rule (a value equal to the default counts as unset) trained resnet18 here."""
    cfg, _ = contrastive_config(["--demo-size", "small", "--backbone", "resnet50", "--max-steps", "0"])
    assert cfg.backbone == "resnet50" and cfg.max_steps == 0
    assert cfg.num_prototypes == 300  # untyped: small's


@dataclasses.dataclass
class Toy(StageConfig):
    size: int = field(10, "")
    steps: int = field(0, "0 = from the preset")
    name: str = field("a", "")


TOY_PRESETS = {"tiny": {"size": 2, "steps": 5}, "": {"steps": 50}}


def test_apply_preset_fills_defaults_only():
    assert apply_preset(Toy(demo_size="tiny"), TOY_PRESETS, ()) == Toy(demo_size="tiny", size=2, steps=5)
    # a value set in code differs from the default: it stands, with no click context to ask
    assert apply_preset(Toy(demo_size="tiny", size=7), TOY_PRESETS, ()).size == 7
    # a typed value equal to the default stands too
    assert apply_preset(Toy(demo_size="tiny"), TOY_PRESETS, {"size"}) == Toy(demo_size="tiny", size=10, steps=5)
    assert apply_preset(Toy(), TOY_PRESETS, ()).steps == 50  # "" = full size has a preset too
    said: list[str] = []
    apply_preset(Toy(demo_size="tiny"), TOY_PRESETS, {"steps"}, said.append, "toy")
    assert said == ["toy: DEMO_SIZE=tiny preset: size=2"]
    apply_preset(Toy(demo_size="small"), TOY_PRESETS, (), said.append, "toy")
    assert len(said) == 1  # nothing to fill, nothing said


def test_a_preset_naming_an_unknown_field_is_an_error():
    with pytest.raises(KeyError, match="batch"):
        apply_preset(Toy(demo_size="tiny"), {"tiny": {"batch": 3}}, ())


def test_demo_scaling_of_paper_constants_leaves_typed_values():
    """regions and shards scale the paper's pixel constants at demo sizes, except where typed."""
    from shared.regions.config import PAPER, RegionsConfig, grouping_params
    from preprocess.shards import PAPER as PASTE_PAPER, ShardsConfig, paste_params

    cfg = RegionsConfig(dataset="cityscapes", demo_size="tiny")
    assert grouping_params(cfg, (96, 192)).n_segments == 96 * 192 // 9
    assert grouping_params(cfg, (96, 192), {"n_segments"}).n_segments == PAPER.n_segments
    assert grouping_params(dataclasses.replace(cfg, n_segments=500), (96, 192)).n_segments == 500
    shards = ShardsConfig(demo_size="tiny")
    assert paste_params(shards, 96).height_tolerance == 4
    assert paste_params(shards, 96, {"height_tolerance"}).height_tolerance == PASTE_PAPER.height_tolerance
    assert paste_params(ShardsConfig(), 96).height_tolerance == PASTE_PAPER.height_tolerance  # full size: paper


def test_depth_and_synth_zero_means_preset():
    from preprocess.synth import SynthConfig, resolved as synth_resolved
    from train.depth import DepthTrainConfig, resolved as depth_resolved

    small = depth_resolved(DepthTrainConfig(demo_size="small", batch_size=3))
    assert (small.height, small.width, small.batch_size, small.max_steps) == (64, 128, 3, 300)
    city = synth_resolved(SynthConfig(demo_size="tiny", frames=3))
    assert (city.sequences, city.frames, city.size) == (2, 3, "96x192")
    assert synth_resolved(SynthConfig()).size == "384x768"


def test_unsupervised_presets_scale_real_datasets_only(monkeypatch):
    import evaluate.unsupervised as U

    seen: list = []
    monkeypatch.setattr(U, "evaluate_unsupervised", seen.append)
    r = CliRunner().invoke(U.unsupervised, ["--dataset", "cityscapes", "--demo-size", "tiny", "--height", "128"])
    assert r.exit_code == 0, r.output
    assert (seen[0].height, seen[0].width, seen[0].max_frames) == (128, 192, 4)
    r = CliRunner().invoke(U.unsupervised, ["--demo-size", "small", "--max-frames", "0"])
    assert r.exit_code == 0, r.output
    assert (seen[1].height, seen[1].width, seen[1].max_frames) == (0, 0, 0)  # synthetic: native size; all frames
