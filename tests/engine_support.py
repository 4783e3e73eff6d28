"""Helpers shared by the engine tests: config files, the synthetic evaluation set.

A plain module, not conftest: tests/, tests/daemon/ and tests/gui/ each have a
conftest.py, and `from conftest import ...` gets whichever of them was imported last.
Import these from `engine_support` instead.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspectd import cli
from inspectd.config import Config

# Settings every test config starts from: small, fast, offline. resnet18 with layers
# 1+2 (random weights carry more usable signal in shallow layers), 96 px input.
ENGINE_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18",
    "weights": "random",
    "layers": ["layer1", "layer2"],
    "size": 96,
    # 4 held-out images (20% of 20) meet the conformal requirement ceil(1/0.2 - 1) = 4.
    "false_alarm_rate": 0.2,
    "batch_size": 8,
    # The same numbers on every CPU (auto would pick bf16 on AMX machines only, after a
    # check that may re-enroll); tests/test_precision.py covers bf16 and auto.
    "precision": "fp32",
}
SESSION_PRODUCT = "tiles"
SOURCE_HW = (128, 128)  # synthetic source images; the network sees 96 x 96


# ------------------------------------------------------------------ config files


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_table(values: dict[str, Any]) -> str:
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items() if value is not None)


def write_config(folder: Path, *, defaults: dict[str, Any] | None = None,
                 products: dict[str, dict[str, Any]] | None = None, images: dict[str, Any] | None = None,
                 extra: str = "") -> Path:
    """A config.toml in `folder` whose data paths all live under `folder`: device cpu,
    random weights, small images. The store and results paths are relative on purpose
    (they resolve against the file's folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = toml_table({
        "store_dir": "models",
        "database_url": f"sqlite:///{folder / 'inspectd.db'}",
        "results_dir": "results",
        "enroll_dir": "enroll",
        "device": "cpu",
    })
    if images:
        text += "\n[images]\n" + toml_table(images)
    text += "\n[defaults]\n" + toml_table({**ENGINE_DEFAULTS, **(defaults or {})})
    for name, section in (products or {}).items():
        text += f'\n[products."{name}"]\n' + toml_table(section)
    path = folder / "config.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


# ------------------------------------------------------------------------- data


@dataclass
class LabelledSet:
    paths: list[Path]
    labels: np.ndarray  # 0 good, 1 defect
    masks: list[np.ndarray | None]  # source-size bool masks, None for goods


def load_eval_set(base: Path) -> LabelledSet:
    """The test split of a generate_dataset() folder, with labels and masks."""
    import cv2

    paths, labels, masks = [], [], []
    for folder in sorted((base / "test").iterdir()):
        for path in sorted(folder.glob("*.png")):
            paths.append(path)
            if folder.name == "good":
                labels.append(0)
                masks.append(None)
            else:
                labels.append(1)
                mask = cv2.imread(str(base / "ground_truth" / folder.name / f"{path.stem}_mask.png"),
                                  cv2.IMREAD_GRAYSCALE)
                masks.append(mask > 0)
    return LabelledSet(paths, np.array(labels), masks)


def copy_images(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy(path, folder / path.name)
    return folder


@dataclass
class Enrolled:
    """The session's enrolled product (conftest fixture `enrolled`)."""

    config_path: Path
    config: Config
    product: str
    report: Any  # inspectd.enroll.EnrollReport
    dataset: Path


# ---------------------------------------------------------------- command line


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() reconfigures the root logger onto the (captured) stderr: undo it.
    (Import it into a test module of the CLI; as an autouse fixture it applies there.)"""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    """`inspectd ARGV...` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
