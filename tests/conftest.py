"""Shared fixtures for the engine tests (helpers live in engine_support.py).

Everything is generated locally: the synthetic generator (seeded) for images, randomly
initialised torchvision models for backbones (``weights = "random"`` or a state-dict
file saved from one). Nothing is ever downloaded.

Sizes are chosen for a 2-core CPU: resnet18, layers 1+2, 96 px network input, 128 px
source images. One product is enrolled once per session and shared by the scoring and
CLI tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from engine_support import SESSION_PRODUCT, SOURCE_HW, Enrolled, LabelledSet, load_eval_set, write_config
from inspectd.config import Config, load_config
from inspectd.synthetic import DatasetSpec, generate_dataset
from servers import LINE_ROLE, OWNER_ROLE, MosquittoBroker, PostgresDatabase, PostgresServer, start_or_skip

# One intra-op thread: this suite's tensors are small, and on a busy 2-core machine two
# OpenMP threads spin against other processes (measured: enrollment 2 s -> 8-26 s).
torch.set_num_threads(int(os.environ.get("INSPECTD_TEST_THREADS", "1")))


def pytest_configure(config: pytest.Config) -> None:
    # Random backbones warn on every build by design; tests that check the warning use
    # pytest.warns, which records regardless of this filter.
    config.addinivalue_line("filterwarnings", "ignore::inspectd.backbone.RandomWeightsWarning")


# ------------------------------------------------------------------ configs


@pytest.fixture
def make_config(tmp_path: Path):
    """Factory: make_config(defaults=..., products=..., images=...) -> (path, Config),
    each in its own folder under tmp_path (store, database, results included)."""
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


# --------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic tiles in MVTec layout: 20 train goods, 8 test goods, 3 per defect type."""
    root = tmp_path_factory.mktemp("data")
    return generate_dataset(root, DatasetSpec(category="tiles", n_train=20, n_test_good=8, n_test_defect=3,
                                              size=SOURCE_HW, seed=0))


@pytest.fixture(scope="session")
def eval_set(dataset: Path) -> LabelledSet:
    return load_eval_set(dataset)


# ----------------------------------------------------------------- backbones


@pytest.fixture(scope="session")
def resnet18_state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local weights file as an air-gapped line PC would have: the state dict of a
    (here randomly initialised, seeded) torchvision resnet18."""
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


# ---------------------------------------------------------- enrolled product


@pytest.fixture(scope="session")
def enrolled(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Enrolled:
    """The session's product, enrolled once from the 20 train goods (all in the bank, cross-fitted)."""
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


# ------------------------------------------------------------ real servers


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (initdb + pg_ctl into a temporary folder)."""
    server = start_or_skip(lambda: PostgresServer().start())
    yield server
    server.stop()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh, empty database on the session's server, dropped afterwards."""
    name = postgres_server.create_database()
    yield PostgresDatabase(name, postgres_server.url(name, OWNER_ROLE), postgres_server.url(name, LINE_ROLE))
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """A Mosquitto broker on a loopback port for the session (tests that stop it use
    their own: see ``make_broker``)."""
    broker = start_or_skip(lambda: MosquittoBroker().start())
    yield broker
    broker.close()


@pytest.fixture
def make_broker() -> Iterator[Callable[[], MosquittoBroker]]:
    """Factory for a broker of the test's own, which it may stop and restart."""
    brokers: list[MosquittoBroker] = []

    def make() -> MosquittoBroker:
        broker = start_or_skip(lambda: MosquittoBroker().start())
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()
