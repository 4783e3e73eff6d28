"""Exception types. Every error a user can cause derives from InspectdError and
carries a one-line message that names the offending file, key or product."""

from __future__ import annotations


class InspectdError(Exception):
    """Base class: the CLI prints these as one line and exits 1."""


class UsageError(InspectdError):
    """Wrong command-line usage (exit status 2)."""


class ConfigError(InspectdError):
    """Invalid configuration file or value."""


class ImageError(InspectdError):
    """An image that cannot be read: corrupt, truncated, empty, too large, not an image."""


class ModelError(InspectdError):
    """A product model that is missing, corrupt or incompatible."""


class ProductNameError(InspectdError):
    """A product name that is not safe to use as a directory name."""


class DatabaseError(InspectdError):
    """A database that cannot be opened, is locked too long, or refuses an operation."""
