"""`python -m evaluate unsupervised`: unsupervised semantic segmentation of pre-trained networks side
by side: our pre-training ("pre-trained"), PiCIE trained on the same frames (`make picie`, "PiCIE peer",
when there is a run) and randomly initialised networks of the same architecture ("random init"), all
on the same frames with the same clustering. Several checkpoints of one method (one per seed) are
each scored and reported as mean and standard deviation.

    labelled frames -> network -> z [B, 128, H/4, W/4]
      -> clusters: the K prototypes grouped into C by agglomerative clustering (cosine, average
         linkage), or spherical k-means on sampled pixel features (--clustering kmeans)
      -> every pixel (features bilinearly upsampled to the label size, re-normalised) takes the
         cluster of its nearest prototype / centroid
      -> confusion with the ground truth -> Hungarian matching -> pixel accuracy, IoU, mIoU

Protocols (see evaluate.segmentation_metrics): `paper` = 19 trainIds, matching maximising the
summed IoU; `picie` = 27 classes, matching maximising matched pixels; `both` (default) scores each.
C defaults to the number of the protocol's classes present in the evaluated ground truth (19 on the
full Cityscapes val set), and the mIoU averages over those present classes. Images are fed and
labels (nearest-resized) scored at 384x768 for Cityscapes, 384x1280 for KITTI, native size for the
synthetic city and folders. k-means, like PiCIE's evaluation, is fitted on features of the evaluated
frames themselves (transductive); the prototype clustering uses no evaluation data at all.

Writes to <out>/<dataset>/eval/<name>/: report.json (every number), report.md and report.html
(self-contained) with the per-class IoU tables, confusion_<protocol>.png, iou_<protocol>.png,
predictions_<frame>.png (image, ground truth, both models' predictions) and pca_<frame>.png
(3 principal components of the features as RGB).
"""
from __future__ import annotations

import functools
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection

import click
import numpy as np
from tqdm import tqdm

from evaluate.report_html import markdown_page
from evaluate.segmentation_metrics import PROTOCOLS, Protocol, confusion_matrix, evaluate_clusters
from shared.atomic import write_text
from shared.config import build_config, config_hash, config_options, field, save_config
from shared.eta import Eta
from shared.frames import DataError, Frame
from shared.imageio import read_label, read_rgb, write_png
from shared.presets import apply_preset, explicit_options
from shared.reuse import done_key, file_stamp, frames_stamp, mark_done, reuse
from shared.stage import UNLABELLED, StageConfig, frames_for, no_labels, output_dir, read_pointer, write_pointer

# Working resolution (H, W) of the datasets with a fixed one; the others are evaluated at native size.
DEFAULT_SIZES = {"cityscapes": (384, 768), "kitti": (384, 1280)}
DEMO_DIVISOR = {"tiny": 4, "small": 2}  # of DEFAULT_SIZES
DEMO_MAX_FRAMES = {"tiny": 4, "small": 16}
# small compares with 3 random inits, so random init has a spread of its own beside the seeds of ours
DEMO_RANDOM_INITS = {"tiny": 1, "small": 3}
MODEL_NAMES = ("pre-trained", "random init")
# The peer method; not "picie", the name of the 27-class protocol, so tables never read "picie | picie".
PICIE = "PiCIE peer"
DONE = "done.json"  # the done record (shared.reuse), written after every other file of the report
# torch, the clustering and the pictures are imported inside the functions that use them, so that
# `--help` stays light (docs/design.md#command-line)
if TYPE_CHECKING:
    import torch

    from evaluate.clustering import Codebook


def _no_grad(fn):
    """torch.no_grad() for `fn`, without importing torch before `fn` runs."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)
    return run


@dataclass
class UnsupervisedConfig(StageConfig):
    checkpoint: str = field("auto", "pre-trained checkpoint(s): auto = the latest of `make train` for this "
                                    "DATASET/DEMO_SIZE and every finished run of the same settings with another "
                                    "--seed, or paths, comma-separated (one per seed: the report gives their mean "
                                    "and spread)")
    picie: str = field("auto", "PiCIE checkpoint(s) scored beside ours: auto = the one `make picie` recorded for "
                               "this DATASET/DEMO_SIZE, if any; none = leave PiCIE out; or paths, comma-separated")
    split: str = field("auto", "frames to evaluate (only labelled ones): auto = val if it has labelled "
                               "frames, else all labelled frames", choices=["auto", "train", "val", "test", "all"])
    protocol: str = field("both", "paper: 19 trainIds, max summed IoU matching; picie: 27 classes, max "
                                  "matched pixels; both", choices=["paper", "picie", "both"])
    clustering: str = field("agglomerative", "agglomerative: prototypes grouped by cosine average linkage; "
                                             "kmeans: spherical k-means on pixel features",
                            choices=["agglomerative", "kmeans"])
    n_clusters: int = field(0, "clusters C (0 = number of the protocol's classes present in the evaluated labels)",
                            bounds="[0, inf)")
    height: int = field(0, "evaluation height (0 = Cityscapes/KITTI 384, synthetic/folder native; DEMO_SIZE "
                           "tiny 1/4, small 1/2)", bounds="[0, inf)")
    width: int = field(0, "evaluation width (0 = Cityscapes 768, KITTI 1280, synthetic/folder native)",
                       bounds="[0, inf)")
    max_frames: int = field(0, "evaluate at most this many frames (0 = all; DEMO_SIZE tiny 4, small 16)",
                            bounds="[0, inf)")
    baseline: bool = field(True, "also score a randomly initialised network of the same architecture")
    random_inits: int = field(1, "random-init networks scored (seeds seed, seed+1, ...): several give the "
                                 "baseline's own spread", bounds="[0, inf)")
    seed: int = field(0, "seed of the random-init baseline and of k-means", bounds="[0, inf)")
    kmeans_samples: int = field(50000, "pixel features sampled (over all frames) to fit k-means", bounds="[1, inf)")
    pictures: int = field(4, "frames drawn with predictions and PCA maps", hash=False, bounds="[0, inf)")
    batch_size: int = field(2, "images per forward pass", hash=False, bounds="[1, inf)")
    device: str = field("auto", "auto = cuda when available", choices=["auto", "cpu", "cuda"], hash=False)
    name: str = field("", "run folder under <out>/<dataset>/eval/ (default <checkpoint's run folder>-<clustering>)",
                      hash=False)
    force: bool = field(False, "evaluate again even when the config, the checkpoints and the frames did not change "
                               "since the report was written", hash=False, rerun=False)


def load_ground_truth(path: str | os.PathLike, size: tuple[int, int], protocol: Protocol) -> np.ndarray:
    """uint8 [H, W] class ids of a labelIds PNG under a protocol (nearest resize; IGNORE elsewhere).

    The files hold labelIds, never trainIds: the protocol's mapping is always applied.
    """
    return protocol.to_classes(read_label(path, size))


def select_frames(frames: list[Frame], split: str, max_frames: int) -> tuple[list[Frame], str]:
    """The labelled frames to evaluate, and the split actually used."""
    labelled = [f for f in frames if f.semantic]
    if split == "auto":
        split = "val" if any(f.split == "val" for f in labelled) else "all"
    chosen = labelled if split == "all" else [f for f in labelled if f.split == split]
    chosen = sorted(chosen, key=lambda f: f.id)
    if max_frames > 0 and len(chosen) > max_frames:
        # evenly spread, so a short run still sees several sequences
        pick = np.linspace(0, len(chosen) - 1, max_frames).round().astype(int)
        chosen = [chosen[i] for i in pick]
    return chosen, split


def demo_presets(dataset: str) -> dict[str, dict[str, int]]:
    """DEMO_SIZE presets: fewer frames and, for the datasets with a fixed evaluation size, a fraction
    of it (the synthetic city is already rendered at its demo size)."""
    presets: dict[str, dict[str, int]] = {}
    for demo, div in DEMO_DIVISOR.items():
        presets[demo] = {"max_frames": DEMO_MAX_FRAMES[demo], "random_inits": DEMO_RANDOM_INITS[demo]}
        if dataset in DEFAULT_SIZES:
            h, w = DEFAULT_SIZES[dataset]
            # multiples of 32 keep the FPN levels aligned
            presets[demo].update(height=max(64, h // div // 32 * 32), width=max(64, w // div // 32 * 32))
    return presets


def resolve_config(kwargs: dict[str, Any], explicit: Collection[str], echo=click.echo) -> UnsupervisedConfig:
    """The config of the parsed options, with the DEMO_SIZE preset where the user set nothing."""
    cfg = build_config(UnsupervisedConfig, kwargs)
    return apply_preset(cfg, demo_presets(cfg.dataset), explicit, echo, "unsupervised eval")


def eval_size(cfg: UnsupervisedConfig, frames: list[Frame]) -> tuple[int, int]:
    """(H, W) at which images are fed and labels scored."""
    if cfg.height > 0 and cfg.width > 0:
        return cfg.height, cfg.width
    if cfg.dataset in DEFAULT_SIZES:
        return DEFAULT_SIZES[cfg.dataset]
    if cfg.dataset in UNLABELLED:  # the regions' working size: the frames' aspect, 384 rows (a demo: fewer)
        from shared.regions.config import DEMO_DIVISOR as REGIONS_DIVISOR, aspect_size, common_size

        h, w = aspect_size(*common_size(frames))
        return h // REGIONS_DIVISOR[cfg.demo_size], w // REGIONS_DIVISOR[cfg.demo_size]
    # synthetic (already rendered at its demo size): the first frame's native size
    return frames[0].height, frames[0].width


def _paths(text: str) -> list[Path]:
    paths = [Path(p.strip()) for p in text.split(",") if p.strip()]
    for path in paths:
        if not path.is_file():
            raise DataError(path, "checkpoint not found")
    return paths


def seed_siblings(checkpoint: Path) -> list[Path]:
    """`checkpoint` and the finished checkpoints of the runs beside it that differ only in --seed (same
    settings and shard set: the trainer records their `seed_free_hash`), ordered by seed. Old runs
    without the record, unfinished runs (no backbone export yet) and other settings are left out."""
    def record(run: Path) -> dict[str, Any]:
        try:
            return json.loads((run / "config.json").read_text())
        except (OSError, ValueError):
            return {}

    mine = record(checkpoint.parent)
    key = mine.get("seed_free_hash")
    if not key:
        return [checkpoint]
    found = {checkpoint.parent: mine}
    for run in sorted(checkpoint.parent.parent.iterdir()):
        r = record(run) if run.is_dir() and run not in found else {}
        if r.get("seed_free_hash") == key and (run / checkpoint.name).is_file() and any(run.glob("backbone_*.pth")):
            found[run] = r
    return [run / checkpoint.name for run, r in sorted(found.items(), key=lambda kv: (kv[1]["config"]["seed"],
                                                                                      kv[0].name))]


def resolve_checkpoints(cfg: UnsupervisedConfig) -> list[Path]:
    """Our pre-trained checkpoints: the one `make train` recorded and its seed siblings, or the listed ones."""
    if cfg.checkpoint == "auto":
        recorded = _paths(str(read_pointer(cfg, "train", "model")))[0]
        click.echo(f"unsupervised eval: scoring {recorded.parent} (the run `make train` of this DATASET/DEMO_SIZE "
                   f"recorded last in {output_dir(cfg, 'train', 'model.current')}; --checkpoint picks another)")
        paths = seed_siblings(recorded)
        if len(paths) > 1:
            click.echo(f"unsupervised eval: {len(paths)} pre-trainings of the same settings (seeds "
                       f"{', '.join(str(json.loads((p.parent / 'config.json').read_text())['config']['seed']) for p in paths)}"
                       f"): scored one by one, reported as mean and spread")
        return paths
    paths = _paths(cfg.checkpoint)
    if not paths:
        raise click.UsageError("--checkpoint names no file")
    return paths


def resolve_picie(cfg: UnsupervisedConfig) -> list[Path]:
    """PiCIE checkpoints: none, the one `make picie` recorded (when there is one), or the listed ones."""
    if cfg.picie == "none":
        return []
    if cfg.picie == "auto":
        pointer = output_dir(cfg, "picie", "model.current")
        return [read_pointer(cfg, "picie", "model")] if pointer.is_file() else []
    return _paths(cfg.picie)


@dataclass(frozen=True)
class ModelSpec:
    method: str  # "pre-trained" | PICIE | "random init": runs of one method are aggregated
    checkpoint: Path | None  # None: a random init
    seed: int | None  # the random init's seed


def model_specs(cfg: UnsupervisedConfig) -> list[ModelSpec]:
    """Every network to score, ours first (the random inits copy its architecture)."""
    specs = [ModelSpec(MODEL_NAMES[0], p, None) for p in resolve_checkpoints(cfg)]
    specs += [ModelSpec(PICIE, p, None) for p in resolve_picie(cfg)]
    if cfg.baseline:
        specs += [ModelSpec(MODEL_NAMES[1], None, cfg.seed + i) for i in range(max(1, cfg.random_inits))]
    return specs


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@_no_grad
def _features(model: torch.nn.Module, frames: list[Frame], size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    import torch

    from shared.nets.semantic_fpn import normalize_images

    images = np.stack([read_rgb(f.image, size) for f in frames])  # [B, H, W, 3]
    x = normalize_images(torch.from_numpy(images).to(device))
    return model(x).float(), images  # z [B, D, H/4, W/4]


@_no_grad
def kmeans_sample(model: torch.nn.Module, frames: list[Frame], size: tuple[int, int], device: torch.device,
                  n_samples: int, batch_size: int, seed: int, desc: str, eta: Eta | None = None) -> torch.Tensor:
    """[N, D] pixel features drawn evenly from every frame (at feature resolution) for k-means."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    per_frame = max(1, n_samples // max(1, len(frames)))
    out = []
    for batch in tqdm(_batches(frames, batch_size), desc=f"{desc}: k-means sample", unit="batch"):
        z, _ = _features(model, batch, size, device)
        for zi in z.cpu():
            flat = zi.flatten(1).T  # [h*w, D]
            out.append(flat[torch.randperm(flat.shape[0], generator=gen)[:per_frame]])
        if eta is not None:
            eta.update(1)
    return torch.cat(out)


@dataclass
class ModelResult:
    confusions: dict[str, np.ndarray]  # protocol -> [n_classes, C]
    cluster_maps: dict[str, list[np.ndarray]]  # protocol -> per picture frame [H, W] cluster ids
    features: list[torch.Tensor]  # per picture frame [D, h, w] (cpu)
    images: list[np.ndarray]  # per picture frame [H, W, 3]
    seconds: float


@_no_grad
def run_model(model: torch.nn.Module, frames: list[Frame], gts: dict[str, list[np.ndarray]],
              codebooks: dict[str, Codebook], size: tuple[int, int], device: torch.device,
              batch_size: int, n_pictures: int, desc: str, eta: Eta | None = None) -> ModelResult:
    """Forward every frame once and accumulate the cluster/class confusion of every protocol."""
    from evaluate.clustering import nearest_centre

    t0 = time.perf_counter()
    model = model.to(device).eval()
    protos = {p: PROTOCOLS[p] for p in codebooks}
    confs = {p: np.zeros((protos[p].n_classes, cb.n_clusters), np.int64) for p, cb in codebooks.items()}
    maps: dict[str, list[np.ndarray]] = {p: [] for p in codebooks}
    feats: list[torch.Tensor] = []
    images: list[np.ndarray] = []
    # protocols that share the same centres (prototypes) share one nearest-centre search
    by_centres: dict[int, list[str]] = {}
    for p, cb in codebooks.items():
        by_centres.setdefault(id(cb.centres), []).append(p)
    done = 0
    for batch in tqdm(_batches(frames, batch_size), desc=desc, unit="batch"):
        z, imgs = _features(model, batch, size, device)
        for group in by_centres.values():
            idx = nearest_centre(z, codebooks[group[0]].centres, size).cpu()  # [B, H, W]
            for p in group:
                clusters = codebooks[p].cluster_of[idx].numpy()  # [B, H, W]
                for i in range(len(batch)):
                    confs[p] += confusion_matrix(gts[p][done + i], clusters[i], protos[p].n_classes,
                                                 codebooks[p].n_clusters)
                    if done + i < n_pictures:
                        maps[p].append(clusters[i])
        for i in range(len(batch)):
            if done + i < n_pictures:
                feats.append(z[i].cpu())
                images.append(imgs[i])
        done += len(batch)
        if eta is not None:
            eta.update(1)
    return ModelResult(confs, maps, feats, images, time.perf_counter() - t0)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.2f}"


def write_report(out: Path, summary: dict[str, Any], pictures: dict[str, list[str]]) -> tuple[Path, Path]:
    """report.md (pictures referenced relatively) and report.html (pictures embedded)."""
    lines = [f"# Unsupervised semantic segmentation: {summary['dataset']}", "",
             f"- checkpoint: `{summary['checkpoint']}`",
             f"- frames: {len(summary['frames'])} ({summary['split']} split) at {summary['size'][0]}x{summary['size'][1]}",
             f"- clustering: {summary['clustering']}",
             f"- mIoU rule: {summary['averaging_rule']}"]
    for mname, nets in summary.get("networks", {}).items():
        lines.append(f"- {mname}: " + ", ".join(f"`{n}`" for n in nets))
    lines += ["", "Several networks of one method (seeds): mean +- sample standard deviation; per-class tables "
              "give the mean, pictures show the first network.", ""]
    lines += ["| protocol | model | networks | clusters | pixel accuracy | mIoU |",
              "| --- | --- | --- | --- | --- | --- |"]
    for pname, pr in summary["protocols"].items():
        for mname, mr in pr["models"].items():
            lines.append(f"| {pname} protocol ({len(pr['classes'])} classes) | {mname} | {mr.get('n_runs', 1)} | {pr['n_clusters']} | "
                         f"{_spread(mr, 'pixel_accuracy')} | {_spread(mr, 'miou')} |")
    for pname, pr in summary["protocols"].items():
        models = list(pr["models"])
        lines += ["", f"## Protocol `{pname}`: {pr['description']}", "",
                  "| class | " + " | ".join(f"IoU {m}" for m in models) + " |",
                  "| --- | " + " | ".join("---" for _ in models) + " |"]
        for cname in pr["present_classes"]:
            lines.append(f"| {cname} | " + " | ".join(_fmt(pr["models"][m]["per_class_iou"][cname]) for m in models) + " |")
        lines += ["| **mean** | " + " | ".join(f"**{_fmt(pr['models'][m]['miou'])}**" for m in models) + " |", ""]
        lines += [f"![per-class IoU, {pname}](iou_{pname}.png)", "",
                  f"Confusion (rows: ground truth, normalised; blue = matched class), {', '.join(models)}:", "",
                  f"![confusion, {pname}](confusion_{pname}.png)", ""]
    lines += ["## Frames", "",
              "Each frame: the image, then per protocol the ground truth and each model's matched prediction "
              "(white = cluster matched to no class, black = ignored). Then the first 3 principal components "
              "of each model's features as RGB.", ""]
    for fid, files in pictures.items():
        lines += [f"### {fid}", ""] + [f"![{Path(f).stem}]({f})" for f in files] + [""]
    md = write_text(out / "report.md", "\n".join(lines) + "\n")

    # HTML: the same content with every picture embedded, so the file can be mailed or archived alone.
    page = write_text(out / "report.html", markdown_page(lines, out, "Unsupervised segmentation report"))
    return md, page


def _scores_dict(conf: np.ndarray, protocol: Protocol) -> dict[str, Any]:
    mapping, cc, s = evaluate_clusters(conf, protocol.matching)
    return {
        "pixel_accuracy": s.pixel_accuracy,
        "miou": s.miou,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(protocol.class_names, s.iou)},
        "cluster_to_class": [protocol.class_names[m] if m >= 0 else None for m in mapping.tolist()],
        "confusion_clusters": conf.tolist(),
        "confusion_matched": cc.tolist(),
        "_mapping": mapping,
        "_class_conf": cc,
        "_iou": s.iou,
    }


def method_scores(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One method's entry of the report from its networks' scores (_scores_dict each, in order).

    One network: its scores as they are. Several (seeds): pixel accuracy, mIoU and every class's IoU
    are the mean over the networks, with the sample standard deviation (n - 1) beside them in
    *_std; every network's own scores are kept under "runs". The pictures' private fields
    (_mapping, _class_conf) are the first network's, _iou the mean.
    """
    public = [{"network": n, **{k: v for k, v in r.items() if not k.startswith("_")}} for n, r in zip(names, runs)]
    if len(runs) == 1:
        return {**runs[0], "n_runs": 1, "pixel_accuracy_std": None, "miou_std": None, "runs": public}
    acc = np.array([r["pixel_accuracy"] for r in runs], dtype=np.float64)
    miou = np.array([r["miou"] for r in runs], dtype=np.float64)
    ious = np.stack([np.asarray(r["_iou"], dtype=np.float64) for r in runs])  # [R, n_classes], NaN = absent
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every run stays NaN
        mean_iou = np.nanmean(ious, axis=0)
    classes = list(runs[0]["per_class_iou"])
    return {
        "n_runs": len(runs),
        "pixel_accuracy": float(acc.mean()), "pixel_accuracy_std": float(acc.std(ddof=1)),
        "miou": float(miou.mean()), "miou_std": float(miou.std(ddof=1)),
        "per_class_iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, mean_iou)},
        "runs": public,
        "_mapping": runs[0]["_mapping"], "_class_conf": runs[0]["_class_conf"], "_iou": mean_iou,
    }


def _spread(scores: dict[str, Any], key: str) -> str:
    """'57.90' for one network, '57.90 +- 1.20' for several."""
    std = scores.get(f"{key}_std")
    return _fmt(scores[key]) + ("" if std is None else f" +- {_fmt(std)}")


def _codebooks(net: Any, cfg: UnsupervisedConfig, n_clusters: dict[str, int], frames: list[Frame],
               size: tuple[int, int], device: "torch.device", desc: str, eta: Eta) -> dict[str, Any]:
    """Each protocol's codebook (cluster centres and the cluster of each) for one network."""
    from evaluate.clustering import Codebook, kmeans_codebook, prototype_codebook

    codebooks: dict[str, Codebook] = {}
    if cfg.clustering == "agglomerative":
        # one set of centres (the prototypes) for every protocol: one nearest-prototype search
        # per pixel serves them all, only the prototype -> cluster grouping differs
        centres = prototype_codebook(net.prototypes.weight, 1).centres
        for p, n in n_clusters.items():
            codebooks[p] = Codebook(centres, prototype_codebook(centres, n).cluster_of, n)
    else:
        sample = kmeans_sample(net, frames, size, device, cfg.kmeans_samples, cfg.batch_size, cfg.seed, desc, eta)
        for p, n in n_clusters.items():
            codebooks[p] = kmeans_codebook(sample, n, seed=cfg.seed)
    return codebooks


def _score_networks(specs: list[ModelSpec], cfg: UnsupervisedConfig, frames: list[Frame],
                    gts: dict[str, list[np.ndarray]], n_clusters: dict[str, int], size: tuple[int, int],
                    device: "torch.device", eta: Eta
                    ) -> tuple[dict[str, list[ModelResult]], dict[str, list[str]], dict[str, Any], dict[str, Any]]:
    """Every network in turn, on the same frames with the same clustering; one in memory at a time.
    Returns (results and run names by method, the architecture of the networks, our first checkpoint's config)."""
    import torch

    from shared.nets.semantic_fpn import DenseSwAVNet, load_pretrained

    methods = list(dict.fromkeys(s.method for s in specs))
    results: dict[str, list[ModelResult]] = {m: [] for m in methods}
    run_names: dict[str, list[str]] = {m: [] for m in methods}
    model_args: dict[str, Any] = {}
    ckpt_config: dict[str, Any] = {}
    for spec in specs:
        if spec.checkpoint is not None:
            net, config = load_pretrained(spec.checkpoint, map_location="cpu")
            if not model_args:  # the first (ours) fixes the random inits' architecture
                model_args, ckpt_config = dict(net.net_args), config
            label = str(spec.checkpoint)
        else:
            torch.manual_seed(int(spec.seed or 0))
            net = DenseSwAVNet(**model_args).eval()
            label = f"seed {spec.seed}"
        desc = spec.method + (f" #{len(results[spec.method]) + 1}" if len(results[spec.method]) else "")
        net = net.to(device).eval()
        codebooks = _codebooks(net, cfg, n_clusters, frames, size, device, desc, eta)
        # pictures of each method's first network only
        n_pictures = cfg.pictures if not results[spec.method] else 0
        results[spec.method].append(run_model(net, frames, gts, codebooks, size, device, cfg.batch_size, n_pictures,
                                              desc, eta))
        run_names[spec.method].append(label)
        del net
    return results, run_names, model_args, ckpt_config


def _summary(cfg: UnsupervisedConfig, split: str, size: tuple[int, int], ckpt: Path,
             nets: tuple[dict[str, Any], dict[str, Any]], frames: list[Frame], results: dict[str, list[ModelResult]],
             run_names: dict[str, list[str]], n_clusters: dict[str, int], present: dict[str, np.ndarray]
             ) -> dict[str, Any]:
    """The report's numbers (per protocol and method; "_"-keys carry what the pictures need).
    nets: (the architecture of the scored networks, the first checkpoint's config)."""
    summary: dict[str, Any] = {
        "dataset": cfg.dataset, "split": split, "size": list(size), "checkpoint": str(ckpt),
        "net_args": nets[0], "checkpoint_config": nets[1], "clustering": cfg.clustering,
        "frames": [f.id for f in frames],
        "networks": run_names,
        "averaging_rule": "mean IoU over the classes with ground-truth pixels in the evaluated frames "
                          "(all classes on the full Cityscapes val set); only those classes are matched",
        "spread_rule": "methods with several networks (seeds): mean over them, and the sample standard "
                       "deviation (n - 1) in *_std",
        "protocols": {},
        "seconds": {m: round(sum(r.seconds for r in rs), 2) for m, rs in results.items()},
    }
    for p in n_clusters:
        proto = PROTOCOLS[p]
        summary["protocols"][p] = {
            "description": proto.description, "matching": proto.matching, "n_clusters": n_clusters[p],
            "classes": proto.class_names, "present_classes": [proto.class_names[c] for c in present[p]],
            "models": {m: method_scores([_scores_dict(r.confusions[p], proto) for r in rs], run_names[m])
                       for m, rs in results.items()},
        }
    return summary


def _write_pictures(out: Path, summary: dict[str, Any], results: dict[str, list[ModelResult]], frames: list[Frame],
                    gts: dict[str, list[np.ndarray]], size: tuple[int, int]) -> dict[str, list[str]]:
    """Confusion and IoU charts per protocol, and the prediction and PCA panels of each method's first network;
    returns the panels' file names by frame id."""
    from evaluate.plots import iou_bars
    from evaluate.report_pictures import (class_palette, colourise, confusion_picture, panel, pca_rgb,
                                          side_by_side, stack_rows)

    pnames = list(summary["protocols"])
    for p in pnames:
        proto = PROTOCOLS[p]
        mres = summary["protocols"][p]["models"]
        confs = [confusion_picture(mres[m]["_class_conf"], proto.class_names, title=f"{m} ({p})") for m in mres]
        write_png(out / f"confusion_{p}.png", side_by_side(confs))
        bars = iou_bars(proto.class_names, [(m, mres[m]["_iou"]) for m in mres], f"Per-class IoU, {p} protocol")
        write_png(out / f"iou_{p}.png", bars.rgb)
    pictures: dict[str, list[str]] = {}
    firsts = {m: rs[0] for m, rs in results.items()}
    first = firsts[MODEL_NAMES[0]]
    pcas = {m: pca_rgb(r.features) for m, r in firsts.items()} if first.images else {}  # --pictures 0: none
    tile_h = min(size[0], 256)
    for i, image in enumerate(first.images):
        fid = frames[i].id
        rows = []
        for p in pnames:
            proto = PROTOCOLS[p]
            palette = class_palette(p)
            tiles = [("image", image), (f"ground truth ({p})", colourise(gts[p][i], palette))]
            for m, r in firsts.items():
                mapping = summary["protocols"][p]["models"][m]["_mapping"]
                classes = np.where(mapping >= 0, mapping, proto.n_classes)[r.cluster_maps[p][i]]
                tiles.append((f"{m} ({p})", colourise(classes, palette)))
            rows.append(panel(tiles, tile_h))
        write_png(out / f"predictions_{fid}.png", stack_rows(rows))
        write_png(out / f"pca_{fid}.png", panel([("image", image)] + [(f"PCA {m}", pcas[m][i]) for m in firsts],
                                                 tile_h))
        pictures[fid] = [f"predictions_{fid}.png", f"pca_{fid}.png"]
    return pictures


def _echo_scores(summary: dict[str, Any], n_clusters: dict[str, int]) -> None:
    for p, models in summary["protocols"].items():
        for m, mr in models["models"].items():
            click.echo(f"  {p:6s} {m:12s} C={n_clusters[p]:3d}  pixel acc {_spread(mr, 'pixel_accuracy'):>14s}  "
                       f"mIoU {_spread(mr, 'miou'):>14s}" + (f"  ({mr['n_runs']} networks)" if mr["n_runs"] > 1 else ""))


def evaluate_unsupervised(cfg: UnsupervisedConfig) -> Path:
    """Evaluate `cfg` (DEMO_SIZE presets already filled in: resolve_config); returns the output folder."""
    from shared.device import pick_device

    t_start = time.perf_counter()
    device = pick_device(cfg.device)
    specs = model_specs(cfg)
    ckpt = specs[0].checkpoint
    assert ckpt is not None
    all_frames = frames_for(cfg)
    frames, split = select_frames(all_frames, cfg.split, cfg.max_frames)
    if not frames and cfg.dataset in UNLABELLED:
        return feature_pictures(cfg, all_frames, ckpt, device)
    if not frames:
        raise DataError(output_dir(cfg, "index.jsonl"),
                        f"no frames with semantic labels in split {cfg.split!r} of dataset {cfg.dataset}")
    size = eval_size(cfg, frames)
    pnames = ["paper", "picie"] if cfg.protocol == "both" else [cfg.protocol]
    # the trainer names its checkpoints <run>/checkpoint.pt: the run folder is what tells them apart
    stem = [] if ckpt.stem in ("checkpoint", "model") else [ckpt.stem]
    trained = [str(s.checkpoint) for s in specs if s.checkpoint is not None]
    # several checkpoints: a joint report, named after all of them so another set gets its own folder
    joint = [f"joint{len(trained)}-{config_hash(cfg, extra={'checkpoints': trained}, length=8)}"] if len(trained) > 1 else []
    name = cfg.name or "-".join([ckpt.parent.name, *stem, cfg.clustering, *joint])
    out = output_dir(cfg, "eval", name)  # created only when there is something to write
    # a checkpoint retrained at the same path, or changed frames, make it another evaluation; the
    # number of pictures does not change a number but does change the files
    inputs = {"checkpoints": [[s.method, str(s.checkpoint), file_stamp(s.checkpoint)] for s in specs if s.checkpoint],
              "frames": frames_stamp(frames, ("image", "semantic")), "pictures": cfg.pictures}
    key = done_key(cfg, inputs)
    if reuse(out / DONE, key, "unsupervised eval", out, cfg.force, click.echo):
        write_pointer(cfg, "eval", "unsupervised", out)
        return out
    methods = list(dict.fromkeys(s.method for s in specs))
    passes = len(specs) * len(_batches(frames, cfg.batch_size)) * (2 if cfg.clustering == "kmeans" else 1)
    click.echo(f"unsupervised eval: plan: {len(frames)} frames ({split}) of {cfg.dataset} at {size[0]}x{size[1]}, "
               f"protocol {', '.join(pnames)}, clustering {cfg.clustering}; "
               + "; ".join(f"{m}: {sum(s.method == m for s in specs)} network(s)" for m in methods)
               + f"; {passes} forward passes of {cfg.batch_size} on {device.type}; checkpoint {ckpt}; the time "
               "estimate follows the first passes")
    eta = Eta("unsupervised eval", passes, "pass", click.echo)

    label_ids = [read_label(f.semantic, size) for f in tqdm(frames, desc="labels", unit="frame")]  # type: ignore[arg-type]
    gts = {p: [PROTOCOLS[p].to_classes(l) for l in label_ids] for p in pnames}
    del label_ids
    present = {p: np.flatnonzero(sum(np.bincount(g.reshape(-1), minlength=256)[:PROTOCOLS[p].n_classes]
                                     for g in gts[p])) for p in pnames}
    n_clusters = {p: cfg.n_clusters or max(1, len(present[p])) for p in pnames}

    results, run_names, model_args, ckpt_config = _score_networks(specs, cfg, frames, gts, n_clusters, size, device, eta)

    summary = _summary(cfg, split, size, ckpt, (model_args, ckpt_config), frames, results, run_names, n_clusters, present)
    pictures = _write_pictures(out, summary, results, frames, gts, size)
    for p in pnames:
        for mr in summary["protocols"][p]["models"].values():
            for k in [k for k in mr if k.startswith("_")]:
                del mr[k]
    report_json = write_text(out / "report.json", json.dumps(summary, indent=1, default=str) + "\n")
    md, html = write_report(out, summary, pictures)
    save_config(cfg, out / "config.json")
    charts = [out / f"{kind}_{p}.png" for p in pnames for kind in ("confusion", "iou")]
    mark_done(out / DONE, key, "unsupervised eval", cfg, inputs, [report_json, md, html, out / "config.json", *charts,
                                                                  *(out / f for fs in pictures.values() for f in fs)])
    write_pointer(cfg, "eval", "unsupervised", out)

    _echo_scores(summary, n_clusters)
    n_pictures = len(charts) + sum(len(fs) for fs in pictures.values())
    click.echo(f"unsupervised eval: wrote {html.name}, {md.name}, {report_json.name} and {n_pictures} pictures into "
               f"{out} in {time.perf_counter() - t_start:.1f} s")
    return out


FEATURE_CLUSTERS = 19  # without labels to count classes: Cityscapes' 19, the paper protocol's


def feature_pictures(cfg: UnsupervisedConfig, all_frames: list[Frame], ckpt: Path, device: torch.device) -> Path:
    """Footage without labels: no scores, only what the pre-trained features show. For frames spread
    evenly over the index: the image, the PCA of its features and their spherical k-means clusters
    (C = --n-clusters, else 19), as feature_<frame>.png and a report.json that says why there are no scores."""
    from evaluate.clustering import assign_clusters, kmeans_codebook
    from evaluate.report_pictures import class_palette, colourise, panel, pca_rgb
    from shared.nets.semantic_fpn import load_pretrained

    t_start = time.perf_counter()
    n = min(len(all_frames), cfg.max_frames or cfg.pictures or 1)
    frames = [all_frames[i * len(all_frames) // n] for i in range(n)]
    size = eval_size(cfg, frames)
    name = cfg.name or f"{ckpt.parent.name}-features"
    out = output_dir(cfg, "eval", name)
    click.echo(f"unsupervised eval: {no_labels(cfg, 'scoring segmentation (pixel accuracy, mIoU)')}; drawing the features "
               f"of {n} frames at {size[0]}x{size[1]} instead")
    net, _ = load_pretrained(ckpt, map_location="cpu")
    net = net.to(device).eval()
    sample = kmeans_sample(net, frames, size, device, cfg.kmeans_samples, cfg.batch_size, cfg.seed, "features")
    k = cfg.n_clusters or FEATURE_CLUSTERS
    codebook = kmeans_codebook(sample, k, seed=cfg.seed)
    feats, images, clusters = [], [], []
    for batch in _batches(frames, cfg.batch_size):
        z, imgs = _features(net, batch, size, device)
        feats += list(z.cpu())
        images += list(imgs)
        clusters += list(assign_clusters(z, codebook, size).cpu().numpy())
    pcas, palette = pca_rgb(feats), class_palette("paper")
    names = []
    for f, image, pca, cl in zip(frames, images, pcas, clusters):
        names.append(f"feature_{f.id}.png")
        write_png(out / names[-1], panel([("image", image), ("PCA", pca), (f"k-means, C={k}",
                                          colourise(cl % len(palette), palette))], min(size[0], 256)))
    summary = {"dataset": cfg.dataset, "frames": [f.id for f in frames], "size": list(size), "checkpoint": str(ckpt),
               "clusters": k, "scores": None, "why_no_scores": no_labels(cfg, "scoring segmentation"), "pictures": names}
    write_text(out / "report.json", json.dumps(summary, indent=1) + "\n")
    save_config(cfg, out / "config.json")
    click.echo(f"unsupervised eval: wrote report.json and {len(names)} feature pictures into {out} in "
               f"{time.perf_counter() - t_start:.1f} s")
    return out


@click.command("unsupervised", context_settings={"show_default": True})
@config_options(UnsupervisedConfig)
def unsupervised(**kwargs: Any) -> None:
    """Unsupervised semantic segmentation of pre-trained checkpoints side by side (ours, PiCIE's when
    there is a run, random init; several seeds each give mean and spread): pixel accuracy, per-class
    IoU and mIoU after Hungarian matching, confusion matrices, predictions, PCA feature maps, as
    report.json, report.md and report.html."""
    cfg = resolve_config(kwargs, explicit_options())
    try:
        evaluate_unsupervised(cfg)
    except DataError as e:
        raise click.ClickException(str(e)) from e
