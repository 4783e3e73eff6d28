"""Shared fixtures for the engine tests.

Everything is generated locally: the synthetic generator (seeded) for images, randomly
initialised torchvision models for backbones (``weights = "random"`` or a state-dict
file saved from one). Nothing is ever downloaded.

Sizes are chosen for a 2-core CPU: resnet18, layers 1+2 (random weights carry more
usable signal in shallow layers), 96 px network input, 128 px source images. One
product is enrolled once per session and shared by the scoring and CLI tests.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import os

import numpy as np
import pytest
import torch

from inspectd.config import Config, load_config
from inspectd.synthetic import DatasetSpec, generate_dataset

# Settings every test config starts from: small, fast, offline.
ENGINE_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18",
    "weights": "random",
    "layers": ["layer1", "layer2"],
    "size": 96,
    # 4 held-out images (20% of 20) meet the conformal requirement ceil(1/0.2 - 1) = 4.
    "false_alarm_rate": 0.2,
    "batch_size": 8,
}
SESSION_PRODUCT = "tiles"
SOURCE_HW = (128, 128)


# One intra-op thread: this suite's tensors are small, and on a busy 2-core machine two
# OpenMP threads spin against other processes (measured: enrollment 2 s -> 8-26 s).
TORCH_THREADS = int(os.environ.get("INSPECTD_TEST_THREADS", "1"))
torch.set_num_threads(TORCH_THREADS)


def pytest_configure(config: pytest.Config) -> None:
    # Random backbones warn on every build by design; tests that check the warning use
    # pytest.warns, which records regardless of this filter.
    config.addinivalue_line("filterwarnings", "ignore::inspectd.backbone.RandomWeightsWarning")


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
    """A config.toml in `folder` whose data paths all live under `folder`. The store and
    results paths are relative on purpose: they resolve against the file's folder."""
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


@pytest.fixture
def make_config(tmp_path: Path):
    """Factory: make_config(defaults=..., products=..., images=...) -> (path, Config)."""
    counter = iter(range(1000))

    def make(**kwargs: Any) -> tuple[Path, Config]:
        path = write_config(tmp_path / f"cfg{next(counter)}", **kwargs)
        return path, load_config(path)

    return make


@pytest.fixture
def tmp_config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "etc")


@pytest.fixture
def tmp_config(tmp_config_path: Path) -> Config:
    """A config with store, database and results under tmp_path, CPU, random weights."""
    return load_config(tmp_config_path)


# ------------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic tiles in MVTec layout: 20 train goods, 8 test goods, 3 per defect type."""
    root = tmp_path_factory.mktemp("data")
    return generate_dataset(root, DatasetSpec(category="tiles", n_train=20, n_test_good=8, n_test_defect=3,
                                              size=SOURCE_HW, seed=0))


@dataclass
class LabelledSet:
    paths: list[Path]
    labels: np.ndarray  # 0 good, 1 defect
    masks: list[np.ndarray | None]  # source-size bool masks, None for goods


def load_eval_set(base: Path) -> LabelledSet:
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


@pytest.fixture(scope="session")
def eval_set(dataset: Path) -> LabelledSet:
    return load_eval_set(dataset)


def copy_images(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy(path, folder / path.name)
    return folder


# --------------------------------------------------------------------- backbones


@pytest.fixture(scope="session")
def resnet18_state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local weights file as an air-gapped line PC would have: the state dict of a
    (here randomly initialised, seeded) torchvision resnet18."""
    import torch
    import torchvision

    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


# ------------------------------------------------------------- enrolled product


@dataclass
class Enrolled:
    config_path: Path
    config: Config
    product: str
    report: Any  # inspectd.enroll.EnrollReport
    dataset: Path


@pytest.fixture(scope="session")
def enrolled(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Enrolled:
    """The session's product, enrolled once from the 20 train goods (16 bank, 4 held out)."""
    from inspectd.enroll import enroll

    path = write_config(tmp_path_factory.mktemp("session"))
    config = load_config(path)
    report = enroll(config, SESSION_PRODUCT, dataset / "train" / "good")
    return Enrolled(path, config, SESSION_PRODUCT, report, dataset)


@pytest.fixture(scope="session")
def session_model(enrolled: Enrolled):
    from inspectd.model import ProductModel
    from inspectd.store import ModelStore

    return ProductModel.load(ModelStore(enrolled.config.store_dir), enrolled.product)
