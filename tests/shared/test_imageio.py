import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.frames import DataError
from shared.imageio import image_size, read_label, read_rgb, resize_nearest


def test_resize_nearest_takes_the_pixel_under_each_centre():
    a = np.arange(16).reshape(4, 4)
    assert resize_nearest(a, (2, 2)).tolist() == [[5, 7], [13, 15]]  # centres at input 1.0 and 3.0
    assert resize_nearest(np.array([[1, 2], [3, 4]]), (4, 4)).tolist() == \
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_resize_nearest_is_exact_on_ties():
    # 1024 -> 384 puts some output centres exactly on input pixel borders, where float versions drift
    for src, dst in ((1024, 384), (2048, 768), (375, 192), (1242, 640)):
        got = resize_nearest(np.arange(src)[:, None], (dst, 1))[:, 0]
        want = [int(Fraction(2 * i + 1, 2) * src / dst) for i in range(dst)]
        assert got.tolist() == want


def test_resize_nearest_keeps_channels_and_identity():
    a = np.random.default_rng(0).random((6, 8, 3))
    assert resize_nearest(a, (6, 8)) is a
    assert resize_nearest(a, (3, 4)).shape == (3, 4, 3)


def test_read_label_resizes_with_the_same_rule(tmp_path):
    lab = np.random.default_rng(1).integers(0, 34, (1024, 2048), dtype=np.uint8)
    Image.fromarray(lab).save(tmp_path / "l.png")
    assert np.array_equal(read_label(tmp_path / "l.png", (384, 768)), resize_nearest(lab, (384, 768)))


# --- every frame a camera gives comes out as the RGB it shows (docs/reliability.md) ---

def _png16(path, arr: np.ndarray) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour): [H, W] grey, [H, W, 2] grey +
    alpha, [H, W, 3] RGB or [H, W, 4] RGBA, uint16."""
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[1 if arr.ndim == 2 else arr.shape[2]]  # PNG's IHDR codes
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


_V16 = np.array([[0, 255, 256, 1000], [30000, 32768, 65280, 65535]], dtype=np.uint16)


def test_16_bit_grey_keeps_its_high_byte_instead_of_saturating_to_white(tmp_path):
    for name, write in (("pil.png", lambda p: Image.fromarray(_V16).save(p)),  # Pillow's own I;16 PNG
                        ("hand.png", lambda p: _png16(p, _V16)),
                        ("grey.tif", lambda p: Image.fromarray(_V16).save(p))):
        write(tmp_path / name)
        got = read_rgb(tmp_path / name)
        assert got.shape == (2, 4, 3) and got.dtype == np.uint8
        assert got[..., 0].tolist() == [[0, 0, 1, 3], [117, 128, 255, 255]], name  # v // 256, not min(v, 255)
        assert (got == got[..., :1]).all()


def test_16_bit_colour_and_grey_alpha_follow_the_same_rule(tmp_path):
    rgb = np.stack([_V16, _V16[::-1], 65535 - _V16], axis=-1)  # [2, 4, 3]
    _png16(tmp_path / "rgb16.png", rgb)
    assert np.array_equal(read_rgb(tmp_path / "rgb16.png"), (rgb >> 8).astype(np.uint8))
    _png16(tmp_path / "rgba16.png", np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=-1))
    assert np.array_equal(read_rgb(tmp_path / "rgba16.png"), (rgb >> 8).astype(np.uint8))  # alpha 0 is dropped
    _png16(tmp_path / "la16.png", np.stack([_V16, np.full_like(_V16, 7)], axis=-1))
    assert np.array_equal(read_rgb(tmp_path / "la16.png"), np.repeat((_V16 >> 8).astype(np.uint8)[..., None], 3, -1))


def test_8_bit_modes_come_out_as_their_colours(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    grey = np.array([[0, 77], [200, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    Image.fromarray(np.dstack([grey, 255 - grey])).save(tmp_path / "la.png")
    Image.fromarray(np.dstack([rgb, [[0, 128], [255, 1]]]).astype(np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).quantize(4).save(tmp_path / "p.png")
    Image.fromarray(grey > 100).save(tmp_path / "1.png")
    want_grey = np.repeat(grey[..., None], 3, -1)
    assert np.array_equal(read_rgb(tmp_path / "l.png"), want_grey)
    assert np.array_equal(read_rgb(tmp_path / "la.png"), want_grey)
    assert np.array_equal(read_rgb(tmp_path / "rgba.png"), rgb)
    assert np.array_equal(read_rgb(tmp_path / "p.png"), rgb)
    assert np.array_equal(read_rgb(tmp_path / "1.png"), np.repeat(np.where(grey > 100, 255, 0)[..., None], 3, -1))


def test_cmyk_frames_come_out_as_their_colours(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0]], [[0, 255, 255, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    want = np.array([[[255, 255, 255], [0, 255, 255]], [[255, 0, 0], [0, 0, 0]]], dtype=np.uint8)  # white cyan red black
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    assert np.array_equal(read_rgb(tmp_path / "c.tif"), want)
    big = np.repeat(np.repeat(cmyk, 16, 0), 16, 1)  # blocks, so JPEG's loss stays small
    Image.fromarray(big, "CMYK").save(tmp_path / "c.jpg", quality=95)  # Adobe's inverted CMYK JPEG
    got = read_rgb(tmp_path / "c.jpg")[8::16, 8::16].astype(int)
    assert np.abs(got - want).max() <= 6


# stored -> displayed, per EXIF orientation 1..8 (the EXIF 2.32 table, written independently of Pillow)
_ORIENT = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
           5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(np.fliplr(a), -1), 8: lambda a: np.rot90(a, 1)}


def _with_orientation(arr: np.ndarray, path, orientation: int, **save) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif.tobytes(), **save)


def test_exif_orientation_is_applied_to_pixels_and_to_the_header_size(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    for o, display in _ORIENT.items():
        _with_orientation(stored, tmp_path / f"o{o}.png", o)
        want = display(stored)
        assert np.array_equal(read_rgb(tmp_path / f"o{o}.png"), want), o
        assert image_size(tmp_path / f"o{o}.png") == want.shape[:2], o
        assert np.array_equal(read_rgb(tmp_path / f"o{o}.png", (6, 4) if o >= 5 else (4, 6)).shape, (6, 4, 3) if o >= 5
                              else (4, 6, 3))


def test_a_rotated_phone_jpeg_is_read_upright(tmp_path):
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)  # left half red, right half blue as stored
    stored[:, 32:] = (0, 0, 255)
    _with_orientation(stored, tmp_path / "phone.jpg", 6, quality=95)  # shown turned 90 degrees clockwise
    got = read_rgb(tmp_path / "phone.jpg").astype(int)
    assert got.shape == (64, 32, 3) and image_size(tmp_path / "phone.jpg") == (64, 32)
    assert np.abs(got[8] - (255, 0, 0)).max() < 20 and np.abs(got[56] - (0, 0, 255)).max() < 20  # red on top
    got = read_rgb(tmp_path / "phone.jpg", (16, 8))  # the draft path turns the requested size too
    assert got.shape == (16, 8, 3) and got[2, 4, 0] > 200 and got[13, 4, 2] > 200


def test_modes_that_are_not_camera_frames_are_refused_naming_file_and_mode(tmp_path):
    Image.fromarray(np.ones((2, 3), np.float32)).save(tmp_path / "f.tif")
    Image.fromarray(np.full((2, 3), 70000, np.int32), "I").save(tmp_path / "i.tif")
    for name, mode in (("f.tif", "mode F"), ("i.tif", "mode I ")):
        with pytest.raises(DataError) as e:
            read_rgb(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and mode in str(e.value) and "\n" not in str(e.value)


_PEAK = """
import resource, sys, numpy as np
from shared.imageio import read_rgb
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = read_rgb(sys.argv[1], (384, 768))
assert out.shape == (384, 768, 3) and out.dtype == np.uint8
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)  # MiB grown while reading
"""


def _peak_mib(path) -> float:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


def test_a_50_megapixel_frame_is_read_at_the_working_size_without_copies(tmp_path):
    h, w = 6144, 8192  # 50.3 megapixels
    full = 4 * h * w / 2**20  # MiB: Pillow holds RGB as 4 bytes a pixel
    img = Image.new("RGB", (w, h), (90, 140, 200))
    img.save(tmp_path / "big.jpg", quality=80)  # a flat colour: tiny files, fast to write
    img.save(tmp_path / "big.png", compress_level=1)
    del img
    jpg, png = _peak_mib(tmp_path / "big.jpg"), _peak_mib(tmp_path / "big.png")
    assert jpg < 0.25 * full, jpg  # decoded at 1/8 scale (DCT draft), never in full
    assert png < 1.3 * full, png  # PNG must decode in full, but only once
