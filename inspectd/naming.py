"""Product names become directory names, so they are restricted to a safe alphabet."""

from __future__ import annotations

import re

from .errors import ProductNameError

_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_product_name(name: str) -> str:
    """Return `name` if it is a safe product name, else raise ProductNameError."""
    if not isinstance(name, str) or not _VALID.match(name) or ".." in name:
        raise ProductNameError(
            f"invalid product name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, without '..' or path separators"
        )
    return name
