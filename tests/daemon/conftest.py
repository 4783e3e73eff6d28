"""Fixtures for the daemon tests: one small enrolled product shared by all tests
(resnet18, random weights, 64 px) and, per test, a fresh database, drop folder and
configuration file. The daemon runs as a real subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon_support import DEFAULTS, PRODUCT, DaemonEnv
from inspectd.config import load_config
from inspectd.enroll import enroll
from inspectd.synthetic import generate_images

@pytest.fixture(scope="session")
def sample_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("samples")
    return generate_images(folder, n_good=6, n_defect=4, category="washer", size=(96, 96), seed=3)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with product `part` enrolled once for the whole session."""
    root = tmp_path_factory.mktemp("store")
    good = generate_images(root / "good", n_good=10, n_defect=0, category="washer", size=(96, 96), seed=1)
    config_path = root / "config.toml"
    config_path.write_text(f'store_dir = "models"\ndevice = "cpu"\n{DEFAULTS}')
    enroll(load_config(config_path), PRODUCT, good[0].parent)
    return root / "models"


@pytest.fixture
def daemon_env(tmp_path: Path, model_store: Path) -> DaemonEnv:
    drop = tmp_path / "drop"
    drop.mkdir()
    config_path = tmp_path / "config.toml"
    config_path.write_text(f"""
store_dir = "{model_store}"
database_url = "sqlite:///{tmp_path / 'inspectd.db'}"
results_dir = "{tmp_path / 'results'}"
device = "cpu"
{DEFAULTS}
[daemon]
settle_seconds = 0.2
incomplete_seconds = 3.0
reconcile_seconds = 2.0
runtime_dir = "{tmp_path / 'run'}"
spool_dir = "{tmp_path / 'spool'}"

[[watch]]
path = "{drop}"
product = "{PRODUCT}"
station = "cam1"
""")
    env = DaemonEnv(tmp_path, config_path, drop, f"sqlite:///{tmp_path / 'inspectd.db'}")
    yield env
    for proc in env.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
