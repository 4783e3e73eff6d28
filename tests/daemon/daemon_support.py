"""Helpers shared by the daemon tests (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inspectd.db import open_database

PRODUCT = "part"
# Runs a daemon test on a SQLite file and on the session's PostgreSQL server.
both_backends = pytest.mark.parametrize("database_backend", ["sqlite", "postgresql"])
DEFAULTS = """
[defaults]
backbone = "resnet18"
weights = "random"
size = 64
coreset_ratio = 0.2
false_alarm_rate = 0.2
batch_size = 8
"""


@dataclass
class DaemonEnv:
    root: Path
    config_path: Path
    drop: Path
    database_url: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        log = (self.root / f"daemon{len(self.procs)}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(self.config_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.root.glob("daemon*.log")))

    def results(self) -> list[dict]:
        try:
            with open_database(self.database_url, create=False) as db:
                return db.query_results()
        except Exception:  # not created yet
            return []

    def wait_results(self, count: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = self.results()
            if len(rows) >= count:
                return rows
            for proc in self.procs:
                if proc.poll() not in (None, 0, -9):
                    raise AssertionError(f"daemon exited {proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"only {len(rows)} of {count} results after {timeout} s:\n{self.log()[-3000:]}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the daemon says it runs (schema created, models loaded, watching)."""
        deadline = time.monotonic() + timeout
        while "inspectd running" not in self.log():
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in self.procs):
                raise AssertionError(f"daemon did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self, proc: subprocess.Popen, timeout: float = 30.0) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def make_daemon_env(root: Path, model_store: Path, database_url: str, *, station: str = "cam1",
                    extra: str = "") -> DaemonEnv:
    """A drop folder, results folder and configuration file under *root* for one
    daemon of station *station*; *extra* is appended to the configuration."""
    drop = root / "drop"
    drop.mkdir(parents=True)
    config_path = root / "config.toml"
    config_path.write_text(f"""
store_dir = "{model_store}"
database_url = "{database_url}"
results_dir = "{root / 'results'}"
state_dir = "{root / 'state'}"
device = "cpu"
{DEFAULTS}
[daemon]
settle_seconds = 0.2
incomplete_seconds = 3.0
reconcile_seconds = 2.0
runtime_dir = "{root / 'run'}"

[[watch]]
path = "{drop}"
product = "{PRODUCT}"
station = "{station}"
{extra}""")
    return DaemonEnv(root, config_path, drop, database_url)


def copy_as(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target
