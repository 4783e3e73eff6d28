"""Image decoding (formats, depths, channels, every bad input) and input geometry."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd.errors import ImageError
from inspectd.imageio import Geometry, apply_geometry, decode_image, list_images, read_image

RNG = np.random.default_rng(7)
RGB8 = RNG.integers(0, 256, (12, 17, 3), dtype=np.uint8)  # odd, non-square
GRAY16 = RNG.integers(0, 65536, (12, 17), dtype=np.uint16)
GRAY16[0, 0], GRAY16[0, 1] = 65535, 0


def _write(path: Path, image: np.ndarray, params: list[int] | None = None) -> Path:
    ok, encoded = cv2.imencode(path.suffix, image, params or [])
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def _encoded(suffix: str, image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(suffix, image)
    assert ok
    return encoded.tobytes()


# ------------------------------------------------------------------- good inputs


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_rgb8_values_and_channel_order(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"img{suffix}", RGB8[:, :, ::-1])  # OpenCV writes BGR
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == (12, 17, 3)
    np.testing.assert_allclose(image, RGB8.astype(np.float32) / 255.0, atol=1e-7)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_rgb_channel_order(tmp_path: Path, suffix: str) -> None:
    # Flat colour blocks survive JPEG nearly unchanged; a red block must come back red.
    bgr = np.zeros((32, 48, 3), np.uint8)
    bgr[:, :16] = (0, 0, 255)  # red
    bgr[:, 16:32] = (0, 255, 0)  # green
    bgr[:, 32:] = (255, 0, 0)  # blue
    image = read_image(_write(tmp_path / f"img{suffix}", bgr, [cv2.IMWRITE_JPEG_QUALITY, 100]))
    assert image.shape == (32, 48, 3)
    for block, channel in ((slice(2, 14), 0), (slice(18, 30), 1), (slice(34, 46), 2)):
        means = image[8:24, block].mean(axis=(0, 1))
        assert means[channel] > 0.9 and np.delete(means, channel).max() < 0.1


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".jpg"])
def test_grayscale8_becomes_three_equal_channels(tmp_path: Path, suffix: str) -> None:
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))
    image = read_image(_write(tmp_path / f"g{suffix}", gray))
    assert image.shape == (8, 16, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    tolerance = 3 / 255 if suffix == ".jpg" else 1e-7
    np.testing.assert_allclose(image[..., 0], gray / 255.0, atol=tolerance)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grayscale_full_range(tmp_path: Path, suffix: str) -> None:
    image = read_image(_write(tmp_path / f"g16{suffix}", GRAY16))
    assert image.dtype == np.float32 and image.shape == (12, 17, 3)
    assert image[0, 0, 0] == 1.0 and image[0, 1, 0] == 0.0
    np.testing.assert_allclose(image[..., 1], GRAY16 / 65535.0, atol=1e-7)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgb_values_and_order(tmp_path: Path, suffix: str) -> None:
    rgb = np.dstack([GRAY16, 65535 - GRAY16, GRAY16 // 2])
    image = read_image(_write(tmp_path / f"c16{suffix}", rgb[:, :, ::-1].copy()))
    np.testing.assert_allclose(image, rgb / 65535.0, atol=1e-7)
    assert image[0, 0].tolist() == [1.0, 0.0, pytest.approx(32767 / 65535)]


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_rgba_drops_alpha(tmp_path: Path, suffix: str) -> None:
    alpha = np.full(RGB8.shape[:2], 7, np.uint8)
    bgra = np.dstack([RGB8[:, :, ::-1], alpha])
    image = read_image(_write(tmp_path / f"a{suffix}", bgra))
    assert image.shape == (12, 17, 3)
    np.testing.assert_allclose(image, RGB8 / 255.0, atol=1e-7)


def test_format_is_sniffed_not_taken_from_the_name(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(_encoded(".png", RGB8[:, :, ::-1]))
    np.testing.assert_allclose(read_image(path), RGB8 / 255.0, atol=1e-7)


# -------------------------------------------------------------------- bad inputs


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _corrupt_png() -> bytes:
    data = bytearray(_encoded(".png", RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    middle = len(data) // 2
    for i in range(middle, middle + 64):  # inside IDAT: its CRC no longer matches
        data[i] ^= 0x5A
    return bytes(data)


def _garbage_jpeg() -> bytes:
    good = _encoded(".jpg", RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    body = np.random.default_rng(3).integers(0, 256, len(good) - 5, dtype=np.uint8).tobytes()
    return b"\xff\xd8\xff" + body.replace(b"\xff", b"\x00") + b"\xff\xd9"


def _half(suffix: str) -> bytes:
    data = _encoded(suffix, RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return data[: len(data) // 2]


BAD_FILES = {
    "corrupt.png": _corrupt_png,
    "garbage.jpg": _garbage_jpeg,
    "truncated.jpg": lambda: _half(".jpg"),
    "truncated.png": lambda: _half(".png"),
    "lastbyte.jpg": lambda: _encoded(".jpg", RGB8)[:-1],
    "lastbyte.png": lambda: _encoded(".png", RGB8)[:-1],
    "truncated.bmp": lambda: _half(".bmp"),
    "truncated.tif": lambda: _half(".tif"),
    "empty.png": lambda: b"",
    "notes.png": lambda: b"operator notes: line 3 stopped at 14:02\n",
    "zeros.bmp": lambda: b"\x00" * 100,
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_image_error_naming_the_file(tmp_path: Path, name: str) -> None:
    path = _bad(tmp_path, name, BAD_FILES[name]())
    with pytest.raises(ImageError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_messages_say_what_is_wrong(tmp_path: Path) -> None:
    cases = {"empty.png": "empty", "notes.png": "not a supported image", "truncated.jpg": "truncated JPEG",
             "truncated.png": "truncated PNG", "truncated.bmp": "truncated BMP"}
    for name, words in cases.items():
        with pytest.raises(ImageError, match=words):
            read_image(_bad(tmp_path, name, BAD_FILES[name]()))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read") as info:
        read_image(tmp_path / "gone.png")
    assert "gone.png" in str(info.value)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="dir.png"):
        read_image(tmp_path / "dir.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_too_many_pixels_refused(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"big{suffix}", np.zeros((30, 40, 3), np.uint8))
    assert read_image(path, max_pixels=1200).shape == (30, 40, 3)  # exactly at the limit
    with pytest.raises(ImageError, match="over the limit of 1199") as info:
        read_image(path, max_pixels=1199)
    assert str(path) in str(info.value)


def test_png_header_size_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PNG that claims to be huge is refused from its header, without allocating it."""
    data = bytearray(_encoded(".png", np.zeros((4, 4, 3), np.uint8)))
    data[16:24] = (100_000).to_bytes(4, "big") * 2
    calls = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(a))
    with pytest.raises(ImageError, match="10000000000 pixels"):
        decode_image(bytes(data), name="bomb.png", max_pixels=10**8)
    assert calls == []


def test_over_max_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", RGB8)
    size = path.stat().st_size
    assert read_image(path, max_bytes=size).shape == (12, 17, 3)
    with pytest.raises(ImageError, match=f"{size} bytes, over the limit of {size - 1}") as info:
        read_image(path, max_bytes=size - 1)
    assert str(path) in str(info.value)


def test_list_images_filters(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.tiff", "d.bmp", ".hidden.png", "notes.txt", "x.png.part"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff", "d.bmp"]
    with pytest.raises(ImageError, match="not a folder"):
        list_images(tmp_path / "missing")


# ----------------------------------------------------------------------- geometry


def _ramp(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.dstack([ys / h, xs / w, np.full((h, w), 0.5, np.float32)])


def test_unfrozen_geometry_is_refused() -> None:
    with pytest.raises(ValueError):
        Geometry().input_hw
    with pytest.raises(ValueError):
        apply_geometry(_ramp(10, 10), Geometry())


def test_square_resize() -> None:
    geometry = Geometry(resize="square", size=64).frozen_for((96, 160))
    assert geometry.resize_hw == (64, 64) and geometry.input_hw == (64, 64)
    out = apply_geometry(_ramp(96, 160), geometry)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    # Squashed, not cropped: both ramps still span the whole range.
    assert out[..., 0].min() < 0.02 and out[..., 0].max() > 0.97
    assert out[..., 1].min() < 0.02 and out[..., 1].max() > 0.97


def test_keep_aspect_short_side() -> None:
    wide = Geometry(resize="keep_aspect", size=64).frozen_for((96, 160))
    assert wide.input_hw == (64, 107)  # 160 * 64 / 96 = 106.67
    tall = Geometry(resize="keep_aspect", size=64).frozen_for((160, 96))
    assert tall.input_hw == (107, 64)
    assert apply_geometry(_ramp(96, 160), wide).shape == (64, 107, 3)
    # A smaller image of the same aspect is upscaled to the same input size.
    assert apply_geometry(_ramp(48, 80), wide).shape == (64, 107, 3)


def test_keep_aspect_refuses_other_aspect() -> None:
    geometry = Geometry(resize="keep_aspect", size=64).frozen_for((96, 160))
    apply_geometry(_ramp(99, 160), geometry)  # ~3% off: accepted
    with pytest.raises(ImageError, match="aspect ratio") as info:
        apply_geometry(_ramp(160, 160), geometry, "cam2/part.png")
    assert "cam2/part.png" in str(info.value)


def test_square_accepts_any_aspect() -> None:
    geometry = Geometry(resize="square", size=64).frozen_for((96, 160))
    assert apply_geometry(_ramp(160, 96), geometry).shape == (64, 64, 3)


def test_center_crop() -> None:
    geometry = Geometry(resize="square", size=64, center_crop=48).frozen_for((100, 100))
    assert geometry.resize_hw == (64, 64) and geometry.input_hw == (48, 48)
    image = _ramp(64, 64)  # already at the resize size: the crop is a plain slice
    np.testing.assert_array_equal(apply_geometry(image, geometry), image[8:56, 8:56])


def test_center_crop_keep_aspect() -> None:
    geometry = Geometry(resize="keep_aspect", size=64, center_crop=60).frozen_for((64, 128))
    assert geometry.resize_hw == (64, 128) and geometry.input_hw == (60, 60)
    image = _ramp(64, 128)
    np.testing.assert_array_equal(apply_geometry(image, geometry), image[2:62, 34:94])


def test_roi_is_cut_first() -> None:
    image = np.zeros((50, 80, 3), np.float32)
    image[10:30, 20:60] = 1.0  # the ROI is exactly the bright block
    geometry = Geometry(resize="square", size=32, roi=(20, 10, 40, 20)).frozen_for((50, 80))
    assert geometry.input_hw == (32, 32)
    out = apply_geometry(image, geometry)
    np.testing.assert_allclose(out, 1.0)
    # keep_aspect takes the ROI's aspect, not the image's
    kept = Geometry(resize="keep_aspect", size=32, roi=(20, 10, 40, 20)).frozen_for((50, 80))
    assert kept.input_hw == (32, 64)
    np.testing.assert_allclose(apply_geometry(image, kept), 1.0)


def test_roi_outside_image_is_an_error() -> None:
    geometry = Geometry(resize="square", size=32, roi=(60, 10, 40, 20)).frozen_for((50, 80))
    with pytest.raises(ImageError, match="ROI.*outside") as info:
        apply_geometry(np.zeros((50, 80, 3), np.float32), geometry, "line1/0001.png")
    assert "line1/0001.png" in str(info.value)
    geometry = Geometry(resize="square", size=32, roi=(0, 40, 10, 20)).frozen_for((50, 80))
    with pytest.raises(ImageError, match="outside"):
        apply_geometry(np.zeros((50, 80, 3), np.float32), geometry)


def test_frozen_input_hw_fixes_every_image() -> None:
    geometry = Geometry(resize="keep_aspect", size=64).frozen_for((96, 160))
    sizes = {apply_geometry(_ramp(h, w), geometry).shape[:2] for h, w in ((96, 160), (192, 320), (60, 100))}
    assert sizes == {geometry.input_hw}
