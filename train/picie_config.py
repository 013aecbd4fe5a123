"""PiCIE's options (`PicieConfig`) and DEMO_SIZE presets: a light module (no torch) that the command
(train/picie_command.py) and the trainer (train/picie.py) both import, so neither imports the other."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.config import field
from shared.stage import StageConfig
from train.options import (amp_field, checkpoint_every_field, checkpoint_minutes_field, device_field, progress_field,
                           stop_after_field)


@dataclass
class PicieConfig(StageConfig):
    run: str = field("", "run folder name under picie/ (empty: the config hash)", hash=False)
    splits: tuple[str, ...] = field(("train",), "frame-index splits to train on (the frames `make shards` uses)")
    size: str = field("", "working size HEIGHTxWIDTH the frames are read at (empty: our regions' size: "
                          "Cityscapes/folder 384x768, KITTI 384x1280, synthetic native, halved per DEMO_SIZE step)")
    backbone: str = field("resnet50", "ResNet of the network, as our trainer (resnet18: tests and demos only)",
                          choices=["resnet50", "resnet18"])
    init_weights: str = field("", "torchvision-format ResNet checkpoint for the backbone (empty: random init)")
    num_clusters: int = field(27, "K: PiCIE trains on Cityscapes with K = 27, its number of evaluated classes", bounds="[2, inf)")
    view_scale: float = field(0.5, "views are fed at this share of the working size: PiCIE cuts 320-px views "
                                   "from 640-px frames", bounds="(0, 1]")
    crop_scale: tuple[float, ...] = field((0.5, 1.0), "side-length share of the frame that view 1's crop covers "
                                                      "(PiCIE's min_scale 0.5; the aspect ratio is kept)", bounds="(0, 1]", n=2, ordered=True)
    flip: float = field(0.5, "probability of the horizontal flip of the equivariance transform", bounds="[0, 1]")
    epochs: int = field(10, "epochs (PiCIE: 10); each re-clusters and re-labels every frame, then trains on them", bounds="[1, inf)")
    max_steps: int = field(0, "stop after this many steps (0: epochs decide)", bounds="[0, inf)")
    batch_size: int = field(8, "frames per step, two views each: 16 images per step as one copy-paste group of "
                               "our trainer (PiCIE: 128 views of 320x320)", bounds="[1, inf)")
    lr: float = field(1e-3, "Adam learning rate, constant (PiCIE's Cityscapes script; it decays nothing)", bounds="(0, inf)")
    kmeans_iterations: int = field(20, "Lloyd iterations of each epoch's initial k-means (PiCIE: 20)", bounds="[1, inf)")
    kmeans_init_images: int = field(5120, "images whose features seed each epoch's k-means; the rest update it "
                                          "mini-batch-wise (PiCIE: 20 batches of 256)", bounds="[1, inf)")
    kmeans_batch_images: int = field(256, "images per mini-batch k-means update after the initial fit (PiCIE: 256)", bounds="[1, inf)")
    kmeans_pixels: int = field(256, "pixel features sampled per view image for k-means (0: all of them; PiCIE "
                                    "takes all 6400 of a 320-px view; 256 keeps the initial set at 0.7 GB per view)", bounds="[0, inf)")
    cluster_weighting: str = field("share", "cross-entropy weight of a cluster: share = its share of the labelled "
                                            "pixels (PiCIE's released code), none = equal",
                                   choices=["share", "none"])
    seed: int = field(0, "seed of initialisation, frame order, views and k-means", bounds="[0, inf)")
    workers: int = field(2, "DataLoader worker processes reading frames (0: read in the main process)", hash=False, bounds="[0, inf)")
    device: str = device_field()
    amp: bool = amp_field()
    checkpoint_every: int = checkpoint_every_field()
    checkpoint_minutes: float = checkpoint_minutes_field()
    log_every: int = field(10, "steps between log lines (and non-finite checks)", hash=False, bounds="[1, inf)")
    stop_after: int = stop_after_field()
    progress: bool = progress_field()


# DEMO_SIZE presets: fill only what the user did not type (shared/presets.py).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(backbone="resnet18", epochs=2, batch_size=4, kmeans_pixels=64, checkpoint_every=2, log_every=1,
                 workers=0),
    "small": dict(backbone="resnet18", epochs=4, batch_size=8, kmeans_pixels=128, checkpoint_every=6, log_every=2,
                  workers=0),
}
