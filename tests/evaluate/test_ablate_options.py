"""`evaluate ablate` options reach the grid they name: the grid's shape from the plan `--dry-run` prints
(cells, seeds, images per step, shard-set options, the grid folder), the tables' seed rule, and the
options that act inside the stage commands a grid starts (--train-steps, --train-args, --finetune,
--finetune-iterations, --finetune-args, --label-fraction, --depth, --workers) from those commands,
recorded by a stand-in for the stages."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from evaluate.ablate import Cell, summarise


def plan(tmp_path, *options: str) -> str:
    from evaluate.__main__ import main

    r = CliRunner().invoke(main, ["ablate", "--out", str(tmp_path), "--dry-run", *options])
    assert r.exit_code == 0, r.output
    return r.output


def cells_of(said: str) -> list[str]:
    return sorted({m.group(1) for m in re.finditer(r"^  (\S+) seed \d+:", said, re.M)})


def test_the_axes_make_the_product_of_cells(tmp_path):
    said = plan(tmp_path, "--proposals", "depth,gt", "--lams", "0,0.5", "--ms", "0,4", "--seeds", "3", "--no-peers")
    assert cells_of(said) == sorted(f"{p}-l{lam}-m{m}" for p in ("depth", "gt") for lam in (0, 0.5) for m in (0, 4))
    assert "8 cells x 1 seeds" in said and set(re.findall(r" seed (\d+):", said)) == {"3"}


def test_axes_typed_with_a_demo_size_are_not_replaced_by_the_presets_cells(tmp_path):
    """DEMO_SIZE=tiny's preset lists its own cells; they used to replace the axes the user typed."""
    said = plan(tmp_path, "--demo-size", "tiny", "--ms", "0,4", "--lams", "0.5", "--proposals", "depth", "--no-peers")
    assert cells_of(said) == ["depth-l0.5-m0", "depth-l0.5-m4"]
    assert cells_of(plan(tmp_path, "--demo-size", "tiny", "--no-peers")) == \
        sorted(["depth-l0.5-m4", "felzenszwalb-l0.5-m4", "depth-l0.5-m0", "depth-l0.5-m2"])  # the preset, untyped


def test_cells_seeds_images_per_step_name_and_peers(tmp_path):
    said = plan(tmp_path, "--cells", "depth:0.3:2", "--seeds", "5,6", "--images-per-step", "8", "--name", "g2")
    assert cells_of(said) == ["depth-l0.3-m2", "depth-l1-m0", "picie", "random"]  # the cell, then the peers
    assert set(re.findall(r" seed (\d+):", said)) == {"5", "6"} and "4 cells x 2 seeds = 8 runs" in said
    assert "8 images per step" in said and "2 group(s) per step" in said  # M=2: 4 images a group
    assert "/ablate/g2\n" in said
    assert cells_of(plan(tmp_path, "--cells", "depth:0.3:2", "--no-peers")) == ["depth-l0.3-m2"]


def test_min_seeds_marks_cells_with_fewer_finished_seeds():
    cells = [Cell("depth", 0.5, 4)]
    results = [{"cell": cells[0].key, "seed": s, "finetune": 10.0 + s} for s in (0, 1)]
    for min_seeds, marked in ((2, False), (3, True)):
        entry = summarise(results, cells, min_seeds)["finetune"]["depth lambda=0.5"]["4"]
        assert entry["n"] == 2 and entry["too_few_seeds"] is marked


class FakeStages:
    """Stands in for the stage commands a grid starts (subprocess.run in shared.stage.run_stage): records each
    command and writes what the grid reads back (pointers, a shard manifest, reports), so the options
    that only act inside those commands can be read off the commands themselves."""

    def __init__(self):
        self.commands: list[list[str]] = []

    def __call__(self, cmd, **kwargs):
        import json
        import subprocess
        from pathlib import Path

        self.commands.append(cmd)
        args = cmd[2:]

        def value(name: str) -> str:
            return args[args.index(name) + 1]

        tag = Path(value("--out")) / (value("--dataset") + (f"-{value('--demo-size')}" if value("--demo-size") else ""))
        stage = tuple(args[:2])
        if stage in (("preprocess", "regions"), ("preprocess", "shards")):
            kind = "regions" if stage[1] == "regions" else "shards"
            target = tag / kind / f"{value('--proposals')}-fake"
            target.mkdir(parents=True, exist_ok=True)
            (target / "manifest.json").write_text(json.dumps({"n_groups": 8, "height": 32, "width": 64, "group_size": 4,
                                                              "shards": []}))
            (tag / kind / f"{value('--proposals')}.current").write_text(target.name + "\n")
        elif stage in (("train", "contrastive"), ("train", "picie")):
            folder = tag / ("train" if stage[1] == "contrastive" else "picie") / value("--run")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "checkpoint.pt").write_bytes(b"")
        elif stage == ("evaluate", "unsupervised"):
            folder = tag / "eval" / value("--name")
            folder.mkdir(parents=True, exist_ok=True)
            models = {"pre-trained": {"miou": 10.0}, "random init": {"miou": 5.0}}
            (folder / "report.json").write_text(json.dumps({"protocols": {"paper": {"models": models},
                                                                          "picie": {"models": models}}}))
        elif stage == ("evaluate", "finetune-eval"):
            Path(value("--runs")).mkdir(parents=True, exist_ok=True)
            (Path(value("--runs")) / "report.json").write_text(json.dumps({"miou": 20.0}))
        return subprocess.CompletedProcess(cmd, 0)


def test_pre_training_and_fine_tuning_options_reach_the_stage_commands(tmp_path, monkeypatch):
    from evaluate.__main__ import main
    from shared import stage

    fake = FakeStages()
    monkeypatch.setattr(stage.subprocess, "run", fake)
    r = CliRunner().invoke(main, ["ablate", "--out", str(tmp_path), "--cells", "depth:0.5:4", "--seeds", "0",
                                  "--no-peers", "--train-steps", "7", "--train-args", "--lr 0.02 --momentum 0.5",
                                  "--finetune-iterations", "3", "--label-fraction", "1/4",
                                  "--finetune-args", "--lr 0.003", "--depth", "gt", "--workers", "3"])
    assert r.exit_code == 0, r.output
    by_stage = {tuple(c[2:4]): c[4:] for c in fake.commands}
    regions, shards = by_stage[("preprocess", "regions")], by_stage[("preprocess", "shards")]
    assert regions[regions.index("--depth") + 1] == "gt" and regions[regions.index("--workers") + 1] == "3"
    assert shards[shards.index("--workers") + 1] == "3"
    train = by_stage[("train", "contrastive")]
    assert train[train.index("--max-steps") + 1] == "7" and train[-4:] == ["--lr", "0.02", "--momentum", "0.5"]
    finetune = by_stage[("train", "finetune")]
    assert finetune[finetune.index("--iterations") + 1] == "3" and finetune[-2:] == ["--lr", "0.003"]
    assert finetune[finetune.index("--label-fraction") + 1] == "1/4"

    fake.commands.clear()
    r = CliRunner().invoke(main, ["ablate", "--out", str(tmp_path), "--cells", "depth:0.5:4", "--seeds", "0",
                                  "--no-peers", "--no-finetune", "--name", "clustering-only"])
    assert r.exit_code == 0, r.output
    assert ("train", "finetune") not in {tuple(c[2:4]) for c in fake.commands}
