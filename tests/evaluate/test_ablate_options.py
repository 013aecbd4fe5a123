"""`evaluate ablate` options reach the grid they name, read from the plan `--dry-run` prints (cells,
seeds, images per step, shard-set options, the grid folder) and from the tables' seed rule. The
pre-training and fine-tuning options (--train-steps, --train-args, --finetune*, --label-fraction,
--depth, --workers) act in the stage commands of a real grid: test_ablate.py's two-cell grid."""
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
