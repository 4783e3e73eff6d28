"""Product settings as recorded in a model's metadata, and the input geometry they set."""

from __future__ import annotations

from dataclasses import fields

from .config import ProductSettings
from .imageio import Geometry


def settings_to_json(settings: ProductSettings) -> dict:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}


# Settings that models recorded before the setting existed were built without: a
# version enrolled before cross-fitting held its calibration images out of the bank.
_BEFORE_THE_SETTING = {"calibration_folds": 0}


def settings_from_json(data: dict) -> ProductSettings:
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in {**_BEFORE_THE_SETTING, **data}.items()}
    return ProductSettings(**values)


def geometry_from_settings(settings: ProductSettings) -> Geometry:
    return Geometry(resize=settings.resize, size=settings.size, center_crop=settings.center_crop, roi=settings.roi)
