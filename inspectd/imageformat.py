"""What an image file's own structure says before any pixel is decoded.

Two questions, answered from the encoded bytes alone:

* Is the file complete? A camera writes slowly, so a file is only complete when
  its structure says it ends: a JPEG's end-of-image marker after its last scan (an
  embedded thumbnail's marker inside APP1 does not count), a PNG's IEND chunk after
  every chunk it announces, a BMP's whole pixel array, every TIFF directory, strip
  and tile. A file that is only the first bytes of a format's signature, or whose
  head is still zeros (space reserved by a copy that has not written yet), is not
  complete either.
* How large is the image? Width and height come from the header (JPEG SOF, PNG
  IHDR, BMP info header, TIFF directory), so that a decode bomb is refused before
  the decoder allocates its pixels.
"""

from __future__ import annotations

import re
import struct

SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",
    b"MM\x00+": "TIFF",
}
_SIGNATURE_BYTES = max(len(s) for s in SIGNATURES)
# A JPEG marker inside entropy-coded data: 0xFF followed by anything but a stuffed
# zero, a restart marker or more fill bytes.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}
_MAX_TIFF_DIRECTORIES = 1024


def sniff_format(data: bytes) -> str | None:
    """Image format from the signature, or None."""
    for signature, kind in SIGNATURES.items():
        if data.startswith(signature):
            return kind
    return None


def not_complete(data: bytes) -> str | None:
    """Why these bytes are not a whole image file yet (more are to come), or None."""
    kind = sniff_format(data)
    return not_started(data) if kind is None else incomplete(data, kind)


def not_started(data: bytes) -> str | None:
    """Why a file whose format is not recognised may still become an image, or None:
    it holds only the first bytes of a signature, or nothing but zeros so far."""
    if not data:
        return "file is empty"
    head = data[:_SIGNATURE_BYTES]
    if not head.strip(b"\x00"):
        return "file holds only zero bytes so far"
    if len(data) < _SIGNATURE_BYTES and any(s.startswith(data) for s in SIGNATURES if len(s) > len(data)):
        return f"only the first {len(data)} bytes of an image signature so far"
    return None


def incomplete(data: bytes, kind: str) -> str | None:
    """Why a file of format *kind* is cut short (more bytes are to come), or None
    when its structure is whole. A file whose structure is broken in another way is
    not incomplete: the decoder reports it."""
    try:
        return _CHECKS[kind](data)
    except _Short as short:
        return f"truncated {kind} ({short})"
    except _Broken:
        return None


def dimensions(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from the header, or None where the header does not say."""
    try:
        return _DIMENSIONS[kind](data)
    except (_Short, _Broken, struct.error, IndexError):
        return None


class _Short(Exception):
    """The structure announces more bytes than the file has."""


class _Broken(Exception):
    """The structure is not what the format prescribes (not a matter of length)."""


def _need(data: bytes, end: int, what: str) -> None:
    if end > len(data):
        raise _Short(f"{what} runs past the end of the file at byte {len(data)}")


# --- JPEG ---------------------------------------------------------------------------


def _jpeg_segments(data: bytes):
    """(marker, start, end) of each header segment up to and including the first SOS."""
    position = 2
    while True:
        _need(data, position + 2, "marker")
        if data[position] != 0xFF:
            raise _Broken()
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker == 0xD9:
            return
        _need(data, position + 4, "segment length")
        length = int.from_bytes(data[position + 2:position + 4], "big")
        end = position + 2 + length
        _need(data, end, f"segment 0x{marker:02X}")
        yield marker, position, end
        if marker == 0xDA:
            return
        position = end


def _jpeg_incomplete(data: bytes) -> str | None:
    scan_end = None
    for marker, _, end in _jpeg_segments(data):
        if marker == 0xDA:
            scan_end = end
    if scan_end is None:
        raise _Short("no image data yet")
    position = scan_end
    while True:  # entropy-coded data, then more segments (progressive) until EOI
        found = _JPEG_MARKER.search(data, position)
        if found is None:
            raise _Short("no end-of-image marker after the image data")
        marker = data[found.start() + 1]
        if marker == 0xD9:
            return None
        _need(data, found.start() + 4, "segment length")
        position = found.start() + 2 + int.from_bytes(data[found.start() + 2:found.start() + 4], "big")
        _need(data, position, f"segment 0x{marker:02X}")


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    for marker, start, _ in _jpeg_segments(data):
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[start + 5:start + 9])
            return (width, height) if width and height else None
    return None


# --- PNG ----------------------------------------------------------------------------


def _png_incomplete(data: bytes) -> str | None:
    position = 8
    while True:
        _need(data, position + 8, "chunk header")
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        if not kind.isalpha():  # chunk types are four ASCII letters
            raise _Broken()
        end = position + 12 + length
        _need(data, end, f"chunk {kind.decode('latin-1')}")
        if kind == b"IEND":
            return None
        position = end


def _png_dimensions(data: bytes) -> tuple[int, int] | None:
    _need(data, 24, "IHDR")
    return struct.unpack(">II", data[16:24])


# --- BMP ----------------------------------------------------------------------------

_BMP_UNCOMPRESSED = (0, 3, 6)  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS


def _bmp_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(width, height, bits per pixel, compression, image size) from the info header."""
    _need(data, 18, "file header")
    info_size = int.from_bytes(data[14:18], "little")
    if info_size == 12:  # OS/2 BITMAPCOREHEADER
        _need(data, 26, "info header")
        width, height, _, bits = struct.unpack("<HHHH", data[18:26])
        return width, height, bits, 0, 0
    _need(data, 38, "info header")
    width, height, _, bits, compression, image_size = struct.unpack("<iiHHII", data[18:38])
    return abs(width), abs(height), bits, compression, image_size


def _bmp_incomplete(data: bytes) -> str | None:
    # The file size field in the header is often wrong; the pixel array is not.
    pixels_at = int.from_bytes(data[10:14], "little") if len(data) >= 14 else 0
    width, height, bits, compression, image_size = _bmp_header(data)
    if compression in _BMP_UNCOMPRESSED:
        size = (width * bits + 31) // 32 * 4 * height
    else:
        size = image_size
    _need(data, pixels_at + size, f"pixel array of {size} bytes at byte {pixels_at}")
    return None


def _bmp_dimensions(data: bytes) -> tuple[int, int] | None:
    width, height, *_ = _bmp_header(data)
    return width, height


# --- TIFF ---------------------------------------------------------------------------

_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
_TIFF_INTEGER_FORMATS = {1: "B", 3: "H", 4: "I", 16: "Q"}
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_TIFF_DATA_TAGS = ((273, 279), (324, 325))  # (strip offsets, strip byte counts), (tiles ...)


def _tiff_directories(data: bytes):
    """Each directory as {tag: tuple of integer values}, checking as it goes that
    every directory and every value array lies inside the file."""
    _need(data, 8, "header")
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43
    if big:
        _need(data, 16, "header")
        offset = struct.unpack(order + "Q", data[8:16])[0]
        count_format, entry_size, inline, next_format = "Q", 20, 8, "Q"
    else:
        offset = struct.unpack(order + "I", data[4:8])[0]
        count_format, entry_size, inline, next_format = "H", 12, 4, "I"
    count_size, next_size = struct.calcsize(count_format), struct.calcsize(next_format)
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < _MAX_TIFF_DIRECTORIES:
        seen.add(offset)
        _need(data, offset + count_size, f"directory at byte {offset}")
        count = struct.unpack(order + count_format, data[offset:offset + count_size])[0]
        entries_at = offset + count_size
        _need(data, entries_at + count * entry_size + next_size, f"directory at byte {offset}")
        tags: dict[int, tuple[int, ...]] = {}
        for index in range(count):
            at = entries_at + index * entry_size
            tag, kind = struct.unpack(order + "HH", data[at:at + 4])
            number = struct.unpack(order + count_format.replace("H", "I"), data[at + 4:at + 4 + inline])[0]
            size = _TIFF_TYPE_SIZES.get(kind, 1) * number
            value_at = at + 4 + inline
            if size > inline:
                value_at = struct.unpack(order + next_format, data[value_at:value_at + inline])[0]
                _need(data, value_at + size, f"tag {tag} values at byte {value_at}")
            if kind in _TIFF_INTEGER_FORMATS and tag in (_TIFF_WIDTH, _TIFF_HEIGHT, 273, 279, 324, 325):
                tags[tag] = struct.unpack(f"{order}{number}{_TIFF_INTEGER_FORMATS[kind]}",
                                          data[value_at:value_at + size])
        yield tags
        next_at = entries_at + count * entry_size
        offset = struct.unpack(order + next_format, data[next_at:next_at + next_size])[0]


def _tiff_incomplete(data: bytes) -> str | None:
    directories = 0
    for tags in _tiff_directories(data):
        directories += 1
        for offsets_tag, counts_tag in _TIFF_DATA_TAGS:
            for offset, count in zip(tags.get(offsets_tag, ()), tags.get(counts_tag, ())):
                _need(data, offset + count, f"image data at byte {offset}")
    if not directories:  # writers link the first directory in last
        raise _Short("no image directory yet")
    return None


def _tiff_dimensions(data: bytes) -> tuple[int, int] | None:
    first = next(_tiff_directories(data), {})
    if _TIFF_WIDTH in first and _TIFF_HEIGHT in first:
        return first[_TIFF_WIDTH][0], first[_TIFF_HEIGHT][0]
    return None


_CHECKS = {"JPEG": _jpeg_incomplete, "PNG": _png_incomplete, "BMP": _bmp_incomplete, "TIFF": _tiff_incomplete}
_DIMENSIONS = {"JPEG": _jpeg_dimensions, "PNG": _png_dimensions, "BMP": _bmp_dimensions, "TIFF": _tiff_dimensions}
