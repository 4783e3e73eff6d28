"""Helpers shared by the daemon tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from inspectd.db import open_database
from inspectd.simulation import SMALL_PRODUCT_DEFAULTS

PRODUCT = "part"
DEFAULTS = SMALL_PRODUCT_DEFAULTS


@dataclass
class DaemonEnv:
    root: Path
    config_path: Path
    drop: Path
    database_url: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, extra_env: dict[str, str] | None = None, *, wrapper: tuple[str, ...] = (),
              umask: int | None = None) -> subprocess.Popen:
        """Start `inspectd run`; `wrapper` runs it under another program (setpriv)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        log = (self.root / f"daemon{len(list(self.root.glob('daemon*.log')))}.log").open("w")
        command = [*wrapper, sys.executable, "-m", "inspectd.cli", "run", "--config", str(self.config_path)]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=None if umask is None else (lambda: os.umask(umask)))
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

    def wait_ready(self, timeout: float = 60.0, count: int = 1) -> None:
        """Until the daemon says it runs (models loaded, watching), `count` times in the logs."""
        deadline = time.monotonic() + timeout
        while self.log().count("inspectd running") < count:
            if time.monotonic() > deadline or any(p.poll() not in (None, 0, -9) for p in self.procs):
                raise AssertionError(f"daemon did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self, proc: subprocess.Popen, timeout: float = 30.0) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def status(self) -> dict:
        """`inspectd status --json` as a user would run it."""
        done = subprocess.run([sys.executable, "-m", "inspectd.cli", "status", "--json", "--config",
                               str(self.config_path)], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout)

    def wait_for(self, condition, what: str, timeout: float = 60.0, every: float = 0.2):
        """Poll `condition()` until it returns something true; fail naming `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            for proc in self.procs:
                if proc.poll() not in (None, 0, -9):
                    raise AssertionError(f"daemon exited {proc.returncode} waiting for {what}:\n{self.log()[-3000:]}")
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.log()[-3000:]}")

    def add_config(self, text: str) -> None:
        self.config_path.write_text(self.config_path.read_text() + text)

    def set_daemon(self, **settings: object) -> None:
        """Change [daemon] settings in the configuration file."""
        text = self.config_path.read_text()
        for key, value in settings.items():
            line = f"{key} = {json.dumps(value)}"
            pattern = re.compile(rf"^{key} = .*$", re.M)
            text = pattern.sub(line, text) if pattern.search(text) else text.replace("[daemon]\n", f"[daemon]\n{line}\n")
        self.config_path.write_text(text)


def copy_as(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target
