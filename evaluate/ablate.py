"""`python -m evaluate ablate`: the paper's ablations (Tables 3-4) in one command.

A grid of cells (proposals x lambda x M) times seeds. For every cell and seed:

  regions   `preprocess regions --proposals P`                    one store per P (reused)
  shards    `preprocess shards --proposals P --group-size ...`    one shard set per (P, M), shared by
                                                                  every lambda and seed (reused)
  train     `train contrastive --shards S --lam L --seed s`       one pre-training per cell and seed
  cluster   `evaluate unsupervised --checkpoint C`                 both protocols (paper, PiCIE)
  finetune  `train finetune --init C` + `evaluate finetune-eval`   semantic FPN on a label fraction

M is the number of source frames copy-pasted into one another. Every step trains on the same number
of images (2 x the largest M of the grid, or --images-per-step), every shard set holds every frame in
every epoch, and with --train-steps every cell trains exactly that many steps with the same warm-up:
a grid over M then changes what is pasted, not the batch or the schedule. M = 0 means no copy-paste at all: groups of `ref` frames with zero
pastes per region (`--rounds 0,0`), so every image is paired only with the augmented views of itself.

The runner drives the stages through their commands (their public interface; docs/design.md#layering)
and keeps one small result file per cell and seed: a finished cell is never run again, an
interrupted grid resumes at the first unfinished step (each stage resumes or reuses its own output),
and a grown grid runs only the new cells. Peers in the same tables: random init (scored by the
clustering and fine-tuned from scratch), dense SwAV without copy-paste (M = 0, lambda = 1), and PiCIE
(`train picie`) trained on the same frames for the same steps of the same images per step, then
clustered and fine-tuned as the cells are.

Output: <out>/<dataset>[-<demo>]/ablate/<name>/{results/*.json, tables.md, tables.json, <metric>.png,
config.json}. A difference is called only when it is larger than the seed spread (see `compare`).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import click

from shared.atomic import write_json, write_text
from shared.config import build_config, config_hash, config_options, field, save_config
from shared.faults import kill_point
from shared.frames import DataError
from shared.presets import apply_preset, explicit_options
from shared.shard_set import read_manifest as read_shard_manifest
from shared.stage import StageConfig, output_dir, run_stage

PROPOSALS = ("depth", "felzenszwalb", "gt")
# metric key -> (title, where it comes from)
METRICS = {
    "cluster_paper": "clustering mIoU, paper protocol (19 classes)",
    "cluster_picie": "clustering mIoU, PiCIE protocol (27 classes)",
    "finetune": "fine-tuned semantic FPN mIoU",
}
RANDOM, SWAV, PICIE = "random init", "swav (no copy-paste)", "picie (same frames and steps)"
# With --train-steps every cell trains exactly that many steps, warmed up over this share of them:
# the trainer's default recipe warms up 2 of its 20 epochs.
WARMUP_SHARE = 0.1
# The settings that decide what one cell's run measures; results measured under others are never
# mixed into a grid (cells, seeds and axes may grow freely).
RUN_FIELDS = ("dataset", "data_root", "demo_size", "depth", "images_per_step", "train_steps", "train_args",
              "finetune_iterations", "finetune_args", "label_fraction")


@dataclass
class AblateConfig(StageConfig):
    """The ablation grid and the budget of each of its runs."""

    name: str = field("grid", "grid folder under ablate/ (several grids can live side by side)", hash=False)
    proposals: tuple[str, ...] = field(PROPOSALS, "region proposals axis (depth, felzenszwalb, gt, or any "
                                                  "`preprocess regions --proposals` value)")
    lams: tuple[float, ...] = field((0.0, 0.5, 1.0), "lambda axis: L = lambda L_pixel + (1 - lambda) L_region", bounds="[0, 1]")
    ms: tuple[int, ...] = field((0, 2, 4, 8), "M axis: source frames pasted into one another (0 = no copy-paste)", bounds="[0, inf)")
    cells: tuple[str, ...] = field((), "explicit cells P:lambda:M instead of the full product (e.g. "
                                       "depth:0.5:8,gt:0.5:8)")
    seeds: tuple[int, ...] = field((0, 1, 2), "seeds of every cell (pre-training and fine-tuning)", bounds="[0, inf)")
    depth: str = field("", "depth source for the regions stage (empty = its default: exact depth on the "
                           "synthetic city); the depth-source axis is one grid per source")
    images_per_step: int = field(0, "images per pre-training step (0 = 2 x the largest M, at least 4)", bounds="[0, inf)")
    train_steps: int = field(0, "pre-training steps per cell (0 = the trainer's default for DEMO_SIZE)", bounds="[0, inf)")
    train_args: str = field("", "extra options for `train contrastive`, passed as they are")
    finetune: bool = field(True, "fine-tune every pre-trained network (the Table 3-4 metric)")
    label_fraction: str = field("1/16", "labelled training frames the fine-tuning uses (the paper's 1/16)")
    finetune_iterations: int = field(0, "fine-tuning steps per network (0 = the fine-tuner's default)", bounds="[0, inf)")
    finetune_args: str = field("", "extra options for `train finetune`, passed as they are")
    peers: bool = field(True, "add random init, dense SwAV without copy-paste (M = 0, lambda = 1) and PiCIE trained "
                              "on the same frames for the same steps")
    min_seeds: int = field(2, "a table cell with fewer finished seeds than this is marked and never compared", bounds="[1, inf)")
    workers: int = field(2, "CPU workers of the preprocessing stages", hash=False, bounds="[1, inf)")
    dry_run: bool = field(False, "print the plan (cells, shard sets, commands) and stop", hash=False)


# A CPU grid for the 2-core machine: 10 cells x 3 seeds on the small synthetic city, ResNet-18. It
# shrinks sizes and steps, never the method.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(cells=("depth:0.5:4", "felzenszwalb:0.5:4", "depth:0.5:0", "depth:0.5:2"), seeds=(0, 1),
                 train_steps=4, finetune_iterations=4, label_fraction="1/2"),
    # 64 steps of 8 crops at 96x192 (a quarter of the frame's pixels: four times the images for the
    # same CPU time) and 40 fine-tuning steps keep one run near 2 minutes on 2 cores.
    "small": dict(cells=("depth:0.5:4", "felzenszwalb:0.5:4", "gt:0.5:4", "depth-rgb:0.5:4",
                         "depth:0.5:0", "gt:0.5:0",
                         "depth:0.5:2", "depth:0:4", "depth:1:4", "gt:0:4"),
                  train_steps=64, train_args="--crop-height 96 --crop-width 192",
                  finetune_iterations=40, label_fraction="1/4"),
}


@dataclass(frozen=True)
class Cell:
    proposals: str  # "" for the random-init and PiCIE peers (no shard set)
    lam: float
    m: int
    peer: str = ""  # "picie" for the PiCIE peer, else ""

    @property
    def key(self) -> str:
        if not self.proposals:
            return self.peer or "random"
        return f"{self.proposals}-l{self.lam:g}-m{self.m}"

    @property
    def label(self) -> str:
        if not self.proposals:
            return PICIE if self.peer == "picie" else RANDOM
        return f"{self.proposals} lambda={self.lam:g} M={self.m}"


# ----------------------------------------------------------------------------------------------
# the plan (pure)


def parse_cell(text: str) -> Cell:
    try:
        p, lam, m = text.split(":")
        cell = Cell(p, float(lam), int(m))
    except ValueError:
        raise click.BadParameter(f"cell {text!r} is not PROPOSALS:LAMBDA:M, e.g. depth:0.5:8") from None
    if not 0 <= cell.lam <= 1 or cell.m < 0 or cell.m == 1:
        raise click.BadParameter(f"cell {text!r}: lambda must be in [0, 1] and M 0 or at least 2")
    return cell


def grid_cells(cfg: AblateConfig) -> list[Cell]:
    """The cells of the grid in table order (explicit --cells, else the product), peers last.

    At lambda = 1 and M = 0 the regions play no part (no region loss, no pastes): every such cell is
    dense SwAV without copy-paste, kept once under the first proposals of the grid."""
    if cfg.cells:
        cells = [parse_cell(c) for c in cfg.cells]
    else:
        for m in cfg.ms:
            if m < 0 or m == 1:
                raise click.BadParameter(f"--ms: M must be 0 or at least 2, got {m}")
        cells = [Cell(p, float(lam), int(m)) for p in cfg.proposals for lam in cfg.lams for m in cfg.ms]
    first = cells[0].proposals if cells else PROPOSALS[0]
    cells = [Cell(first, 1.0, 0) if is_swav(c) else c for c in cells]
    if cfg.peers:  # random init last: it copies the architecture of a finished pre-training
        cells += [Cell(first, 1.0, 0), Cell("", 0.0, 0, "picie"), Cell("", 0.0, 0)]
    return list(dict.fromkeys(cells))


def is_swav(c: Cell) -> bool:
    return bool(c.proposals) and c.lam == 1.0 and c.m == 0


def images_per_step(cfg: AblateConfig, cells: Sequence[Cell]) -> int:
    if cfg.images_per_step:
        return cfg.images_per_step
    return max([2 * c.m for c in cells] + [4])


def shard_options(m: int, per_step: int) -> tuple[list[str], int]:
    """(`preprocess shards` options, groups per training step) of M at `per_step` images per step.

    A group holds 2 x group size images (two rounds); M > 0 pastes between M sources, M = 0 groups
    per_step / 2 sources with no paste at all."""
    # every frame in every epoch, so every M sees the same frames; two epochs' worth (the paper's
    # shard set), whatever a DEMO_SIZE preset of the shards stage holds
    every = ["--max-groups", "0", "--epochs", "2"]
    if m == 0:
        return ["--group-size", str(per_step // 2), "--rounds", "0,0", *every], 1
    if per_step % (2 * m):
        raise click.BadParameter(f"images per step {per_step} is not a multiple of 2M = {2 * m}")
    return ["--group-size", str(m), *every], per_step // (2 * m)


def schedule_options(n_groups: int, groups_per_step: int, steps: int) -> list[str]:
    """`train contrastive` options that train exactly `steps` steps on a set of `n_groups` groups.

    One loader worker reads every group of an epoch, so an epoch lasts n_groups // groups_per_step
    steps; enough epochs are planned and --max-steps ends the schedule. The warm-up is WARMUP_SHARE
    of the steps whatever the epoch length, so cells with other M (other group counts) follow the
    same learning-rate curve."""
    per_epoch = n_groups // groups_per_step
    if per_epoch < 1:
        raise DataError(Path("."), f"{n_groups} groups make no step of {groups_per_step} groups")
    epochs = math.ceil(steps / per_epoch)
    warmup = WARMUP_SHARE * steps / per_epoch
    return ["--workers", "1", "--epochs", str(epochs), "--max-steps", str(steps), "--warmup-epochs", f"{warmup:.6g}"]


def run_hash(cfg: AblateConfig) -> str:
    """Hash of the settings one run depends on (RUN_FIELDS)."""
    import hashlib

    blob = json.dumps({k: getattr(cfg, k) for k in RUN_FIELDS}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# tables (pure)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) of the finite values; std NaN below two values."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, math.nan, 0
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else math.nan), len(v)


def compare(a: Sequence[float], b: Sequence[float]) -> str:
    """'>' or '<' when mean a - mean b is larger than the larger of the two sample stds, '~' when
    it is not, '?' with fewer than two values on either side: the one rule the tables use."""
    ma, sa, na = mean_std(a)
    mb, sb, nb = mean_std(b)
    if na < 2 or nb < 2:
        return "?"
    spread = max(sa, sb)
    if abs(ma - mb) <= spread:
        return "~"
    return ">" if ma > mb else "<"


def summarise(results: list[dict[str, Any]], cells: Sequence[Cell], min_seeds: int) -> dict[str, Any]:
    """Per metric: rows (proposals, lambda) x columns M of mean/std/n over seeds, peers as own rows."""
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_cell.setdefault(r["cell"], []).append(r)
    tables: dict[str, Any] = {}
    for metric in METRICS:
        rows: dict[str, dict[str, Any]] = {}
        for c in cells:
            peer = c.label if not c.proposals else SWAV if is_swav(c) else ""
            row, col = (peer, "-") if peer else (f"{c.proposals} lambda={c.lam:g}", str(c.m))
            values = [r.get(metric) for r in by_cell.get(c.key, [])]
            m, s, n = mean_std([v for v in values if v is not None])
            rows.setdefault(row, {})[col] = {"mean": m, "std": s, "n": n, "values": values,
                                             "too_few_seeds": n < min_seeds, "cell": c.key}
        tables[metric] = rows
    return tables


def format_tables(tables: dict[str, Any], ms: list[int]) -> list[str]:
    lines: list[str] = []
    for metric, rows in tables.items():
        if not any(v["n"] for cells in rows.values() for v in cells.values()):
            continue  # a metric the grid did not measure (e.g. --no-finetune)
        cols = [str(m) for m in ms]
        lines += [f"### {METRICS[metric]}", "",
                  "| | " + " | ".join(f"M = {c}" for c in cols) + " | peer |",
                  "|---|" + "---:|" * (len(cols) + 1)]
        for row, cells in rows.items():
            out = []
            for c in cols + ["-"]:
                v = cells.get(c)
                if v is None or v["n"] == 0:
                    out.append("")
                    continue
                txt = f"{v['mean']:.2f}" + (f" +- {v['std']:.2f}" if v["n"] > 1 else "") + f" (n={v['n']})"
                out.append(txt + (" *" if v["too_few_seeds"] else ""))
            lines.append(f"| {row} | " + " | ".join(out) + " |")
        lines += ["", "mean +- sample std over seeds (n = finished seeds); * = fewer seeds than --min-seeds, "
                      "not compared. Two entries differ only when their means are further apart than the "
                      "larger of their stds; otherwise the difference is within the seed spread.", ""]
    return lines


# ----------------------------------------------------------------------------------------------
# running the stages


def _run(cmd: list[str], log: Path, echo=click.echo) -> None:
    """A stage in a process of its own (shared.stage.run_stage), its output appended to the ablation's log."""
    run_stage(cmd[0], cmd[1], cmd[2:], log, log, echo)


def _common(cfg: AblateConfig) -> list[str]:
    out = ["--dataset", cfg.dataset, "--out", str(Path(cfg.out).resolve()), "--demo-size", cfg.demo_size]
    return out + (["--data-root", cfg.data_root] if cfg.data_root else [])


def _py(*args: str) -> list[str]:
    """package, command, arguments: what `_run` runs as `python -m ...`."""
    return list(args)


def _read_pointer(cfg: AblateConfig, stage: str, name: str) -> Path:
    from shared.stage import read_pointer

    return read_pointer(cfg, stage, name)


@contextmanager
def stores_lock(cfg: AblateConfig) -> Iterator[None]:
    """Exclusive while a grid builds a region store and its shard set: the stages record what they wrote in
    `<stage>/<proposals>.current` pointers, which two grids of one OUT would otherwise overwrite between
    one command and the next (a grid with learnt depth beside one with exact depth, say)."""
    import fcntl

    path = output_dir(cfg, "ablate", ".stores.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_shards(cfg: AblateConfig, p: str, m: int, per_step: int, root: Path, log: Path,
                  echo=click.echo, checked: dict[str, Path] | None = None) -> tuple[Path, int]:
    """The shard set of (P, M), built (or reused) now; returns it and the groups per training step.

    The stages are asked every time (they reuse finished work in seconds): a set recorded by an earlier
    invocation may have been made by other code or constants of the proposal method. `checked` remembers
    the answer within one invocation. shard_sets.json records the sets for people, it is never read."""
    opts, groups = shard_options(m, per_step)
    key = f"{p}-m{m}-{per_step}"
    if checked is not None and key in checked:
        return checked[key], groups
    record = root / "shard_sets.json"
    known = json.loads(record.read_text()) if record.is_file() else {}
    depth = ["--depth", cfg.depth] if cfg.depth else []
    with stores_lock(cfg):  # another grid in this OUT may move the same pointers between our two commands
        _run(_py("preprocess", "regions", *_common(cfg), "--proposals", p, "--workers", str(cfg.workers), *depth),
             log, echo)
        store = _read_pointer(cfg, "regions", p)  # the store the command just wrote or reused
        _run(_py("preprocess", "shards", *_common(cfg), "--proposals", p, "--regions", str(store),
                 "--workers", str(cfg.workers), *opts), log, echo)
        path = _read_pointer(cfg, "shards", p)  # the set the command just wrote or reused
    known[key] = str(path)
    write_json(record, known)
    if checked is not None:
        checked[key] = path
    return path, groups


def _miou(report: Path, protocol: str, model: str) -> float:
    r = json.loads(report.read_text())
    return float(r["protocols"][protocol]["models"][model]["miou"])


def wanted(cfg: AblateConfig) -> list[str]:
    """The metrics this grid measures for every cell."""
    return ["cluster_paper", "cluster_picie"] + (["finetune"] if cfg.finetune else [])


def run_cell(cfg: AblateConfig, cell: Cell, seed: int, per_step: int, root: Path, log: Path,
             echo=click.echo, previous: dict[str, Any] | None = None,
             checked: dict[str, Path] | None = None) -> dict[str, Any]:
    """Every step of one cell and seed that `previous` (its earlier result) lacks; returns the record."""
    run = f"ablate-{cfg.name}-{cell.key}-s{seed}"
    res: dict[str, Any] = {"cell": cell.key, "label": cell.label, "seed": seed, "proposals": cell.proposals,
                           "lam": cell.lam, "m": cell.m, "run_hash": run_hash(cfg), **(previous or {})}
    t0 = time.perf_counter()
    clustered = "cluster_paper" in res and "cluster_picie" in res
    if cell.proposals:
        shards, groups = ensure_shards(cfg, cell.proposals, cell.m, per_step, root, log, echo, checked)
        res["shards"] = str(shards)
        n_groups = int(read_shard_manifest(shards)["n_groups"])
        steps = schedule_options(n_groups, groups, cfg.train_steps) if cfg.train_steps else []
        _run(_py("train", "contrastive", *_common(cfg), "--shards", str(shards), "--lam", str(cell.lam),
                 "--seed", str(seed), "--run", run, "--groups-per-step", str(groups), "--no-progress", *steps,
                 *cfg.train_args.split()), log, echo)
        ckpt: Path | None = output_dir(cfg, "train", run, "checkpoint.pt")
    elif cell.peer == "picie":  # PiCIE's own training on the same frames, then the cells' evaluation
        steps = ["--max-steps", str(cfg.train_steps), "--epochs", str(cfg.train_steps)] if cfg.train_steps else []
        _run(_py("train", "picie", *_common(cfg), "--seed", str(seed), "--run", run, "--batch-size",
                 str(max(1, per_step // 2)), "--no-progress", *steps), log, echo)
        ckpt = output_dir(cfg, "picie", run, "checkpoint.pt")
    else:  # random init: scored by the same clustering with its own seed, fine-tuned from scratch
        ckpt = None
    model, init = ("pre-trained", str(ckpt)) if ckpt else (RANDOM, "scratch")
    if not clustered:
        # random init is the untrained twin of a finished pre-training's architecture
        net = ["--checkpoint", str(ckpt), "--no-baseline"] if ckpt else \
            ["--checkpoint", str(_any_checkpoint(cfg)), "--baseline", "--random-inits", "1"]
        _run(_py("evaluate", "unsupervised", *_common(cfg), *net, "--picie", "none", "--seed", str(seed),
                 "--name", run), log, echo)
        report = output_dir(cfg, "eval", run, "report.json")
        res["cluster_paper"] = _miou(report, "paper", model)
        res["cluster_picie"] = _miou(report, "picie", model)
    if cfg.finetune and "finetune" not in res:
        iters = ["--iterations", str(cfg.finetune_iterations)] if cfg.finetune_iterations else []
        _run(_py("train", "finetune", *_common(cfg), "--task", "semantic", "--init", init, "--seed", str(seed),
                 "--label-fraction", cfg.label_fraction, "--run", run, "--no-progress", *iters,
                 *cfg.finetune_args.split()), log, echo)
        ft_dir = output_dir(cfg, "finetune", run)
        _run(_py("evaluate", "finetune-eval", *_common(cfg), "--task", "semantic", "--runs", str(ft_dir)), log, echo)
        res["finetune"] = _finetune_miou(ft_dir / "report.json")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def _finetune_miou(report: Path) -> float:
    r = json.loads(report.read_text())
    for key in ("miou_mean", "miou"):
        if key in r:
            return float(r[key])
    return float(r["summary"]["miou"]["mean"])


def _any_checkpoint(cfg: AblateConfig) -> Path:
    """The evaluation needs the architecture of a pre-trained network to build its random twin: the
    first finished cell's checkpoint."""
    found = sorted(output_dir(cfg, "train").glob(f"ablate-{cfg.name}-*/checkpoint.pt"))
    if not found:
        raise DataError(output_dir(cfg, "train"), "the random-init peer needs one finished pre-training of "
                                                  "this grid first (it runs last in the grid)")
    return found[0]


# ----------------------------------------------------------------------------------------------
# the whole grid


def run_grid(cfg: AblateConfig, echo=click.echo) -> Path:
    cells = grid_cells(cfg)
    per_step = images_per_step(cfg, cells)
    for c in cells:
        if c.proposals:
            shard_options(c.m, per_step)  # refuse an impossible batch before anything runs
    root = output_dir(cfg, "ablate", cfg.name)
    jobs = [(c, s) for c in cells for s in cfg.seeds]
    results_dir = root / "results"
    previous = {p.stem: json.loads(p.read_text()) for p in results_dir.glob("*.json")} if results_dir.is_dir() else {}
    other = sorted(k for k, r in previous.items() if r.get("run_hash") != run_hash(cfg))
    if other:
        raise DataError(results_dir, f"{len(other)} results (e.g. {other[0]}) were measured with other run "
                                     f"settings ({', '.join(RUN_FIELDS)}); give this grid another --name")
    # a run is done when it has every metric this grid asks for; one that lacks some runs only those
    todo = [(c, s) for c, s in jobs if not all(k in previous.get(f"{c.key}-s{s}", {}) for k in wanted(cfg))]
    echo(f"ablate: {len(cells)} cells x {len(cfg.seeds)} seeds = {len(jobs)} runs ({len(jobs) - len(todo)} "
         f"already done), {per_step} images per step, into {root}")
    if cfg.dry_run:
        for c, s in todo:
            opts, groups = shard_options(c.m, per_step) if c.proposals else ([], 0)
            echo(f"  {c.key} seed {s}: shards {' '.join(opts) or '-'}, {groups} group(s) per step")
        return root
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.json", extra={"cells": [c.key for c in cells], "images_per_step": per_step,
                                                  "grid_hash": config_hash(cfg)})
    log = root / "commands.log"
    t0 = time.perf_counter()
    checked: dict[str, Path] = {}
    for i, (c, s) in enumerate(todo):
        echo(f"ablate [{i + 1}/{len(todo)}] {c.label}, seed {s}")
        res = run_cell(cfg, c, s, per_step, root, log, echo, previous.get(f"{c.key}-s{s}"), checked)
        write_json(results_dir / f"{c.key}-s{s}.json", res)  # after every step of the cell: it is finished
        kill_point()  # tests: killed between cells
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))] if results_dir.is_dir() else []
    keys = {c.key for c in cells}
    results = [r for r in results if r["cell"] in keys and r["seed"] in cfg.seeds]
    tables = summarise(results, cells, cfg.min_seeds)
    ms = sorted({c.m for c in cells if c.proposals})
    write_json(root / "tables.json", {"tables": tables, "cells": [c.key for c in cells], "seeds": list(cfg.seeds),
                                      "images_per_step": per_step})
    lines = [f"# Ablations: {cfg.dataset}{'-' + cfg.demo_size if cfg.demo_size else ''}, grid {cfg.name}", "",
             f"{len(results)} finished runs; seeds {', '.join(map(str, cfg.seeds))}; {per_step} images per "
             f"pre-training step; fine-tuning on {cfg.label_fraction} of the labelled frames.", "",
             *format_tables(tables, ms)]
    write_text(root / "tables.md", "\n".join(lines) + "\n")
    _plots(tables, ms, root)
    for ln in format_tables(tables, ms):
        echo(ln)
    echo(f"ablate: {len(todo)} runs in {time.perf_counter() - t0:.0f} s; tables in {root / 'tables.md'}")
    return root


def _plots(tables: dict[str, Any], ms: list[int], root: Path) -> None:
    """One plot per metric: mIoU against M, one line per grid row with its seed spread as error bars;
    the peers (SwAV, PiCIE, random init), measured once, as dashed lines across the M axis."""
    import math as _m

    from evaluate.plots import Series, line_plot
    from shared.imageio import write_png

    peer_colours = {SWAV: "tab:grey", RANDOM: "black", PICIE: "tab:brown"}
    for metric, rows in tables.items():
        series = []
        for row, cells in rows.items():
            if row in peer_colours:
                v = cells.get("-")
                if v and v["n"]:
                    series.append(Series(row, [float(m) for m in ms], [v["mean"]] * len(ms),
                                         colour=peer_colours[row], dashed=True))
                continue
            xs = [m for m in ms if str(m) in cells and cells[str(m)]["n"]]
            if xs:
                errs = [0.0 if _m.isnan(cells[str(m)]["std"]) else cells[str(m)]["std"] for m in xs]
                series.append(Series(row, [float(m) for m in xs], [cells[str(m)]["mean"] for m in xs], errs))
        if series:
            plot = line_plot(METRICS[metric] + " (bars: ± 1 std over seeds)", series,
                             "M (source frames pasted per group)", "mIoU (%)", y_top=100.0, size=(7.5, 3.8),
                             dodge=0.06)
            write_png(root / f"{metric}.png", plot.rgb)


@click.command("ablate")
@config_options(AblateConfig)
def ablate(**kwargs: Any) -> None:
    """The paper's ablations: proposals x lambda x M (x seeds), each pre-trained, clustered and fine-tuned;
    tables with seed spreads and plots. Reruns reuse every finished run."""
    explicit = explicit_options()
    if explicit & {"proposals", "lams", "ms"}:  # a preset's cells would replace the axes the user typed
        explicit.add("cells")
    cfg = apply_preset(build_config(AblateConfig, kwargs), PRESETS, explicit, click.echo, "ablate")
    try:
        run_grid(cfg)
    except DataError as e:
        raise click.ClickException(str(e)) from e
