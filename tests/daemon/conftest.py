"""Fixtures for the daemon tests: one small enrolled product shared by all tests
(resnet18, random weights, 64 px) and, per test, a fresh database, drop folder and
configuration file. The daemon runs as a real subprocess.

The database is a SQLite file unless a test is parametrised with ``both_backends``
(daemon_support): then it also runs on a fresh database of the session's PostgreSQL
server, which the owner role creates and the daemon uses as the line PC's role."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon_support import DEFAULTS, PRODUCT, DaemonEnv, make_daemon_env
from inspectd.config import load_config
from inspectd.db import open_database
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
def database_backend() -> str:
    """Overridden by ``both_backends``."""
    return "sqlite"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, database_backend: str, tmp_path: Path) -> str:
    """The daemon's database: a SQLite file, or a PostgreSQL database whose schema its
    owner created, used with the line PC's role."""
    if database_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'inspectd.db'}"
    database = request.getfixturevalue("postgres_database")
    open_database(database.owner_url).close()
    return database.line_url


@pytest.fixture
def daemon_env(tmp_path: Path, model_store: Path, database_url: str) -> DaemonEnv:
    env = make_daemon_env(tmp_path, model_store, database_url)
    yield env
    env.kill_all()
