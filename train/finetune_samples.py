"""Fine-tuning samples: random scale, crop, flip and colour-jitter parameters, one labelled frame each.

Sample g of a run (g = step * batch + slot) is fully determined by (seed, g): its frame comes from
the seeded permutation of epoch g // n_frames, its augmentation from a generator seeded by (seed, g).
So a resumed run, or one with another number of loader workers, sees exactly the same batches.

    read at the working size (native, or --image-width) -> scale s ~ U(scale_range) -> crop
    (padded with ignore / no-instance where the scaled image is smaller) -> horizontal flip 1/2
    -> photometric parameters (applied batched on the device by shared.photometric)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shared.finetune_data import semantic_target, working_size
from shared.frames import Frame
from shared.imageio import read_label, read_rgb, resize_nearest
from shared.labels import IGNORE, instance_masks
from shared.photometric import IDENTITY, draw_params

JITTER_PROBABILITY = 0.8  # share of samples that get colour jitter (as in SimCLR/MoCo recipes)
MIN_INSTANCE_PIXELS = 8  # objects cut smaller than this by the crop are not training targets


@dataclass(frozen=True)
class SampleSpec:
    task: str  # "semantic" | "instance"
    crop: tuple[int, int]  # (height, width)
    scale_range: tuple[float, float]
    image_width: int  # 0 = native; else frames wider than this are read at this width
    colour_jitter: float  # brightness/contrast/saturation +-this, hue +-this/4; 0 = none
    encoding: str  # instance PNG encoding (shared.labels.decode_instances)
    seed: int


def frame_of_sample(g: int, n_frames: int, seed: int) -> int:
    """Index of the frame sample g shows: epoch g // n goes through a seeded permutation of the frames."""
    epoch, pos = divmod(g, n_frames)
    return int(np.random.default_rng([seed, 0, epoch]).permutation(n_frames)[pos])


def make_sample(frame: Frame, spec: SampleSpec, rng: np.random.Generator) -> dict[str, Any]:
    size = working_size(frame, spec.image_width)
    image = read_rgb(frame.image, size)  # [H, W, 3] uint8
    # semantic: trainIds with IGNORE; instance: the raw instance PNG, decoded after the crop
    label = semantic_target(frame, size) if spec.task == "semantic" else read_label(frame.instance, size)  # type: ignore[arg-type]
    s = rng.uniform(*spec.scale_range)
    sh, sw = max(1, round(size[0] * s)), max(1, round(size[1] * s))
    image = np.asarray(Image.fromarray(image).resize((sw, sh), Image.BILINEAR))
    label = resize_nearest(label, (sh, sw))
    ch, cw = spec.crop
    y0 = int(rng.integers(0, max(sh - ch, 0) + 1))
    x0 = int(rng.integers(0, max(sw - cw, 0) + 1))
    fill = IGNORE if spec.task == "semantic" else 0  # instance 0 = labelId 0 (unlabelled), no object
    img_out = np.zeros((ch, cw, 3), np.uint8)
    lab_out = np.full((ch, cw), fill, label.dtype)
    part = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    h, w = image[part].shape[:2]
    img_out[:h, :w], lab_out[:h, :w] = image[part], label[part]
    if rng.random() < 0.5:
        img_out, lab_out = img_out[:, ::-1], lab_out[:, ::-1]
    j = spec.colour_jitter
    params = (draw_params(rng, JITTER_PROBABILITY, j, j, j, j / 4, 0.0, (0.0, 0.0)) if j > 0
              else np.array(IDENTITY, np.float32))
    out: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(img_out)).permute(2, 0, 1),  # [3, h, w]
                           "photometric": torch.from_numpy(params)}
    if spec.task == "semantic":
        out["target"] = torch.from_numpy(lab_out.astype(np.int64))  # [h, w]
    else:
        out["target"] = instance_targets(np.ascontiguousarray(lab_out), spec.encoding)
    return out


def instance_targets(raw: np.ndarray, encoding: str) -> dict[str, torch.Tensor]:
    """torchvision Mask R-CNN targets of an instance map crop: boxes [N, 4] (x0, y0, x1, y1) float,
    labels [N] int64 in 1..8, masks [N, H, W] uint8. Boxes enclose whole pixels, so never degenerate."""
    classes, masks, _ = instance_masks(raw, encoding)
    keep = masks.sum(axis=(1, 2)) >= MIN_INSTANCE_PIXELS  # [N]
    classes, masks = classes[keep], masks[keep]
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(classes.astype(np.int64)),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


class FinetuneSamples(Dataset):
    """Samples first .. first + count - 1 of a run over `frames` (map-style: any worker can make any)."""

    def __init__(self, frames: list[Frame], spec: SampleSpec, first: int, count: int):
        self.frames, self.spec, self.first, self.count = frames, spec, first, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = self.first + i
        frame = self.frames[frame_of_sample(g, len(self.frames), self.spec.seed)]
        return make_sample(frame, self.spec, np.random.default_rng([self.spec.seed, 1, g]))


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """images uint8 [B, 3, h, w], photometric [B, 5], target: int64 [B, h, w] or a list of dicts."""
    out = {"images": torch.stack([s["image"] for s in samples]),
           "photometric": torch.stack([s["photometric"] for s in samples])}
    t = [s["target"] for s in samples]
    out["target"] = torch.stack(t) if isinstance(t[0], torch.Tensor) else t
    return out
