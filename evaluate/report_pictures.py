"""Pictures for the evaluation reports, drawn with PIL: class colours, confusion matrices, PCA feature
maps and side-by-side panels of images. Plots with axes (losses, IoU bars, curves) are evaluate/plots.py's."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from shared.labels import TRAIN_CLASSES

# Official Cityscapes colours, indexed by labelId 0..33.
LABEL_ID_COLOURS = np.array([
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230),
    (119, 11, 32)], dtype=np.uint8)
NO_CLASS_COLOUR = (255, 255, 255)  # pixels of a cluster that was matched to no class
IGNORE_COLOUR = (0, 0, 0)


def class_palette(protocol: str) -> np.ndarray:
    """uint8 [C, 3]: the Cityscapes colour of each class of a protocol ("paper" 19, "picie" 27)."""
    if protocol == "paper":
        return LABEL_ID_COLOURS[[lid for lid, _ in TRAIN_CLASSES]]
    if protocol == "picie":
        return LABEL_ID_COLOURS[7:34]
    raise ValueError(f"unknown protocol {protocol!r}")


def colourise(classes: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] of a class map [H, W]: 0..C-1 palette, C (no class) white, IGNORE black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = IGNORE_COLOUR
    lut[:len(palette)] = palette
    lut[len(palette)] = NO_CLASS_COLOUR
    return lut[np.clip(classes, 0, 255).astype(np.intp)]


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _text_size(text: str, font) -> tuple[int, int]:
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def confusion_picture(class_conf: np.ndarray, names: list[str], title: str = "", cell: int = 16) -> np.ndarray:
    """uint8 RGB picture of a matched confusion matrix [C, C(+1)], rows (ground truth) normalised.

    Only classes with ground truth get a row and a column; a last column "none" shows the share of
    each class predicted as clusters matched to no class, when there is any.
    """
    n = class_conf.shape[0]
    present = np.flatnonzero(class_conf.sum(1) > 0)
    cols = list(present)
    has_none = class_conf.shape[1] > n and class_conf[:, n].sum() > 0
    if has_none:
        cols.append(n)
    rows = class_conf[present][:, cols].astype(np.float64)
    frac = rows / np.maximum(class_conf[present].sum(1, keepdims=True), 1)
    col_names = [names[c] for c in present] + (["none"] if has_none else [])
    font = _font()
    left = max([_text_size(names[c], font)[0] for c in present] + [10]) + 8
    top = max([_text_size(s, font)[0] for s in col_names] + [10]) + 8 + (14 if title else 0)
    w, h = left + cell * len(cols) + 4, top + cell * len(present) + 4
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((2, 1), title, fill=(0, 0, 0), font=font)
    for i, c in enumerate(present):
        draw.text((2, top + i * cell + 2), names[c], fill=(0, 0, 0), font=font)
        for j in range(len(cols)):
            v = float(frac[i, j])
            shade = int(round(255 * (1 - v)))
            colour = (shade, shade, 255) if (j < len(present) and present[j] == c) else (255, shade, shade)
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(220, 220, 220))
    for j, s in enumerate(col_names):  # column names written bottom-up
        tw, th = _text_size(s, font)
        label = Image.new("RGB", (tw + 4, th + 4), (255, 255, 255))
        ImageDraw.Draw(label).text((0, 0), s, fill=(0, 0, 0), font=font)
        label = label.rotate(90, expand=True)
        img.paste(label, (left + j * cell + (cell - label.width) // 2, top - label.height - 2))
    return np.asarray(img)


def pca_rgb(features: list[torch.Tensor], max_samples: int = 20000, seed: int = 0) -> list[np.ndarray]:
    """The first 3 principal components of dense features as RGB, fitted jointly on all maps.

    features: list of [D, h, w]. Returns uint8 [h, w, 3] per map. Each component is stretched
    between its 1st and 99th percentile; its sign is fixed (largest loading positive) so the
    colours do not flip from run to run.
    """
    flat = [f.float().flatten(1).T for f in features]  # each [h*w, D]
    allx = torch.cat(flat)
    gen = torch.Generator().manual_seed(seed)
    sample = allx[torch.randperm(allx.shape[0], generator=gen)[:max_samples]]
    mean = sample.mean(0)
    _, _, vh = torch.linalg.svd(sample - mean, full_matrices=False)
    comps = vh[:3]  # [3, D]
    if comps.shape[0] < 3:
        comps = torch.cat([comps, torch.zeros(3 - comps.shape[0], comps.shape[1])])
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * torch.where(sign == 0, torch.ones_like(sign), sign)
    proj_sample = (sample - mean) @ comps.T  # [S, 3]
    lo = torch.quantile(proj_sample, 0.01, dim=0)
    hi = torch.quantile(proj_sample, 0.99, dim=0)
    out = []
    for f, x in zip(features, flat):
        p = ((x - mean) @ comps.T - lo) / torch.clamp(hi - lo, min=1e-8)
        rgb = (p.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        out.append(rgb.reshape(f.shape[1], f.shape[2], 3))
    return out


def resize_rgb(img: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """uint8 [H, W, 3] resized to size = (H, W)."""
    if img.shape[:2] == tuple(size):
        return img
    mode = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), mode))


def panel(tiles: list[tuple[str, np.ndarray]], height: int, gap: int = 4) -> np.ndarray:
    """One row of captioned pictures, each scaled to `height` (aspect kept), on white."""
    font = _font()
    scaled = []
    for caption, img in tiles:
        w = max(1, round(img.shape[1] * height / img.shape[0]))
        scaled.append((caption, resize_rgb(img, (height, w), nearest=True)))
    cap_h = 14
    width = sum(t.shape[1] for _, t in scaled) + gap * (len(scaled) + 1)
    canvas = Image.new("RGB", (width, height + cap_h + 2 * gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = gap
    for caption, t in scaled:
        draw.text((x, gap // 2), caption, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(t), (x, cap_h + gap))
        x += t.shape[1] + gap
    return np.asarray(canvas)


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Pictures of any widths stacked vertically, left-aligned on white."""
    width = max(r.shape[1] for r in rows)
    out = np.full((sum(r.shape[0] for r in rows), width, 3), 255, dtype=np.uint8)
    y = 0
    for r in rows:
        out[y:y + r.shape[0], :r.shape[1]] = r
        y += r.shape[0]
    return out


def side_by_side(pictures: list[np.ndarray], gap: int = 12) -> np.ndarray:
    """Pictures of any heights placed left to right, top-aligned on white."""
    height = max(p.shape[0] for p in pictures)
    width = sum(p.shape[1] for p in pictures) + gap * (len(pictures) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for p in pictures:
        out[:p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out
