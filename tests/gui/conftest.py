"""Fixtures of the review-app tests: an offscreen Qt platform, a demo database with
fake results (built once per session; each test gets its own copy of the database
file) and a configuration pointing at it."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gui.demo import populate
from inspectd.config import Config, ReviewSettings
from inspectd.db import Database, open_database

PRODUCTS = ("tiles", "plates")
STATIONS = ("line1", "line2")


@dataclass(frozen=True)
class Demo:
    """The shared demo files and the template database."""

    root: Path
    template: Path
    item_ids: tuple[int, ...]


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("demo")
    template = root / "template.db"
    with open_database(f"sqlite:///{template}") as db:
        ids = populate(db, root, n_good=10, n_defect=12, n_errors=1, products=PRODUCTS, stations=STATIONS)
    return Demo(root, template, tuple(ids))


@pytest.fixture()
def db_url(demo: Demo, tmp_path: Path) -> str:
    """A private copy of the demo database."""
    target = tmp_path / "inspectd.db"
    shutil.copy(demo.template, target)
    return f"sqlite:///{target}"


@pytest.fixture()
def config(demo: Demo, db_url: str, tmp_path: Path) -> Config:
    return Config(
        database_url=db_url, results_dir=demo.root / "results", store_dir=tmp_path / "models",
        enroll_dir=tmp_path / "enroll",
        review=ReviewSettings(band_below_threshold=0.9, operator="tester", page_size=10, poll_seconds=0.2,
                              unsaved_dir=tmp_path / "unsaved"),
    )


@pytest.fixture()
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url, create=False)
    yield database
    database.close()
