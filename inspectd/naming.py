"""Names that become directory names or table cells are restricted to what shows.

Product names become directory names, so they use a small ASCII alphabet. Station
names are free text, but a control or invisible character (a trailing newline from
a script, a zero-width space pasted from a document) is refused: it would break the
tables of `inspectd products` and `results`, and two stations would look the same.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import ProductNameError

_PRODUCT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PRODUCT_RULE = ("use 1-64 characters: ASCII letters, digits, '_', '-' or '.', starting with a letter or "
                "digit; no spaces, control or invisible characters, path separators or '..'")
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
STATION_MAX = 128


def validate_product_name(name: str) -> str:
    """Return `name` if it is a safe product name, else raise ProductNameError."""
    if not isinstance(name, str) or not _PRODUCT.fullmatch(name) or ".." in name:
        raise ProductNameError(f"invalid product name {name!r}: {PRODUCT_RULE}")
    return name


def station_name_problem(name: str) -> str | None:
    """Why `name` cannot be a station name, or None. The empty name is allowed."""
    if len(name) > STATION_MAX:
        return f"is longer than {STATION_MAX} characters"
    hidden = [c for c in name if unicodedata.category(c) in _INVISIBLE]
    if hidden:
        return (f"contains the control or invisible character U+{ord(hidden[0]):04X}; use printable "
                "characters only")
    if name != name.strip():
        return "starts or ends with white space"
    return None
