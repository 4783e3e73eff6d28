"""Image structure read from the bytes: when a file being written is complete, and
the dimensions a header declares (refused before decoding)."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from inspectd.errors import ImageError
from inspectd.imageformat import dimensions, not_complete, sniff_format
from inspectd.imageio import decode_image


def _image(h: int = 37, w: int = 53) -> np.ndarray:
    rng = np.random.default_rng(4)
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def _encoded(extension: str, params: list[int] | None = None, image: np.ndarray | None = None) -> bytes:
    ok, data = cv2.imencode(extension, _image() if image is None else image, params or [])
    assert ok
    return data.tobytes()


def _with_exif_thumbnail(jpeg: bytes) -> tuple[bytes, int]:
    """The JPEG with an APP1 segment holding a thumbnail JPEG (its own end marker
    inside the segment); also the offset just after the thumbnail."""
    thumbnail = _encoded(".jpg", image=_image(8, 8))
    payload = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00" + thumbnail
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:], 2 + len(segment)


FORMATS = {
    "png": lambda: _encoded(".png"),
    "jpeg": lambda: _encoded(".jpg"),
    "progressive jpeg": lambda: _encoded(".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "jpeg with exif thumbnail": lambda: _with_exif_thumbnail(_encoded(".jpg"))[0],
    "bmp": lambda: _encoded(".bmp"),
    "tiff": lambda: _encoded(".tiff"),
    "tiff lzw": lambda: _encoded(".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 5]),
    "16-bit png": lambda: _encoded(".png", image=(_image().astype(np.uint16) * 257)),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_prefix_of_a_file_is_incomplete_and_the_whole_file_is_not(name: str) -> None:
    data = FORMATS[name]()
    assert not_complete(data) is None
    cuts = sorted(set(range(0, 40)) | set(range(len(data) - 40, len(data))) | set(range(0, len(data), 97)))
    for cut in cuts:
        assert not_complete(data[:cut]), f"{name}: {cut} of {len(data)} bytes passed as complete"


def test_a_jpeg_cut_just_after_its_thumbnail_end_marker_is_incomplete() -> None:
    data, after_thumbnail = _with_exif_thumbnail(_encoded(".jpg"))
    partial = data[:after_thumbnail]
    assert partial.endswith(b"\xff\xd9")  # what fooled a check of the last bytes
    assert "truncated JPEG" in not_complete(partial)


def test_a_bmp_with_a_wrong_size_field_is_judged_by_its_pixel_array() -> None:
    data = bytearray(_encoded(".bmp"))
    data[2:6] = (0).to_bytes(4, "little")  # some writers leave the file size at 0
    assert not_complete(bytes(data)) is None
    assert "pixel array" in not_complete(bytes(data[:-1]))


@pytest.mark.parametrize("head", [b"", b"\x89PN", b"\xff\xd8", b"II", b"\x00" * 4096])
def test_the_start_of_a_signature_or_reserved_zeros_are_not_complete(head: bytes) -> None:
    assert not_complete(head)


def test_text_and_other_formats_are_complete_so_the_decoder_names_them() -> None:
    assert not_complete(b"not an image at all") is None
    assert sniff_format(b"GIF89a....") is None and not_complete(b"GIF89a........") is None


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".tiff"])
def test_dimensions_come_from_the_header(extension: str) -> None:
    data = _encoded(extension, image=_image(37, 53))
    assert dimensions(data, sniff_format(data)) == (53, 37)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims width x height."""
    data = bytearray(_encoded(".jpg"))
    position = 2
    while data[position + 1] not in (0xC0, 0xC2):
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    data[position + 5:position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_decode_bomb_is_refused_from_its_header() -> None:
    bomb = _jpeg_claiming(30000, 30000)
    assert len(bomb) < 10_000 and dimensions(bomb, "JPEG") == (30000, 30000)
    with pytest.raises(ImageError, match="declares 30000x30000 = 900000000 pixels.*not decoded"):
        decode_image(bomb, name="bomb.jpg", max_pixels=100_000_000)


def test_bombs_in_every_format_are_refused_before_decoding() -> None:
    png = bytearray(_encoded(".png"))
    png[16:24] = struct.pack(">II", 40000, 40000)
    bmp = bytearray(_encoded(".bmp"))
    bmp[18:26] = struct.pack("<ii", 40000, 40000)
    tiff = _encoded(".tiff")
    for data in (bytes(png), bytes(tiff)):
        assert dimensions(data, sniff_format(data)) is not None
    with pytest.raises(ImageError, match="declares 40000x40000"):
        decode_image(bytes(png), name="bomb.png", max_pixels=10**8)
    with pytest.raises(ImageError, match="declares 53x37"):
        decode_image(tiff, name="small.tiff", max_pixels=100)
    with pytest.raises(ImageError):  # the pixel array it declares is not there either
        decode_image(bytes(bmp), name="bomb.bmp", max_pixels=10**8)
