"""The real app in a real X session: Xvfb (a 1024x768 panel) with the openbox window
manager, driven with the keyboard through xdotool as an operator would, with
screenshots of what the operator sees: the sign-in, the first start, a database
locked by another process, "add to the good set" and its candidate, the rollback by
undo, the shortcut overview and closing with unsaved decisions.

Screenshots go to $INSPECTD_SCREENS (default: the test's temporary folder).
Needs the Debian packages xvfb, openbox, xdotool and Qt's xcb libraries (.ci/run
installs them; the README lists them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from gui.demo import write_demo
from inspectd.config import Config, ProductSettings
from inspectd.db import open_database
from inspectd.synthetic import generate_images

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PANEL = (1024, 768)
GRAB = """
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication(sys.argv[:1])
sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)
"""
LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.rollback()
"""
CONFIG = """
database_url = "sqlite:///{root}/inspectd.db"
results_dir = "{root}/results"
store_dir = "{root}/models"
enroll_dir = "{root}/enroll"
device = "cpu"

[defaults]
backbone = "resnet18"
weights = "random"
layers = ["layer1", "layer2"]
size = 64
embed_dim = 64
search = "exact"
false_alarm_rate = 0.2
calibration_fraction = 0.3

[review]
unsaved_dir = "{root}/unsaved"
page_size = 50

[[review.operators]]
name = "Ana Lima"
badge = "10442"

[[review.operators]]
name = "Kim Weber"
badge = "20001"
roles = ["quality_engineer"]
"""


class Session:
    """An X display with a window manager; runs xdotool and takes screenshots."""

    def __init__(self, display: str, screens: Path, log: Path) -> None:
        self.env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(REPO)}
        self.env.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
        self.screens, self.log = screens, log
        self.shots: list[Path] = []

    def xdo(self, *args: str) -> str:
        done = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    def wait_window(self, name: str, timeout: float = 60.0) -> str:
        """The id of a visible window whose title matches *name* (a regex), once it exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.xdo("search", "--onlyvisible", "--name", name).split()
            if found:
                return found[-1]
            time.sleep(0.2)
        raise AssertionError(f"no window {name!r} after {timeout} s; app log:\n{self.log.read_text()[-3000:]}")

    def gone(self, name: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.xdo("search", "--onlyvisible", "--name", name) and time.monotonic() < deadline:
            time.sleep(0.2)

    def focus(self, window: str) -> None:
        self.xdo("windowactivate", "--sync", window)
        time.sleep(0.3)

    def keys(self, *keys: str, pause: float = 0.25) -> None:
        for key in keys:
            self.xdo("key", "--clearmodifiers", key)
            time.sleep(pause)

    def type(self, text: str) -> None:
        self.xdo("type", "--delay", "40", text)

    def shot(self, name: str) -> Path:
        path = self.screens / f"{len(self.shots) + 1:02d}-{name}.png"
        done = subprocess.run([sys.executable, "-c", GRAB, str(path)], env=self.env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        self.shots.append(path)
        return path


@pytest.fixture()
def x_session(tmp_path: Path) -> Iterator[Session]:
    for tool in ("Xvfb", "openbox", "xdotool"):
        assert shutil.which(tool), f"{tool} is missing: install the packages named in the README (.ci/run does)"
    display = f":{90 + os.getpid() % 500}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", f"{PANEL[0]}x{PANEL[1]}x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
    deadline = time.monotonic() + 20
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    screens = Path(os.environ.get("INSPECTD_SCREENS") or tmp_path / "screens")
    screens.mkdir(parents=True, exist_ok=True)
    session = Session(display, screens, tmp_path / "app.log")
    manager = subprocess.Popen(["openbox"], env=session.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        yield session
    finally:
        for process in (manager, xvfb):
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture()
def plant(tmp_path: Path) -> Path:
    """The demo's queue of product "tiles", a tiny real model of it and a config with two people."""
    root = tmp_path / "plant"
    write_demo(root, n_good=10, n_defect=12)
    (root / "config.toml").write_text(CONFIG.format(root=root), encoding="utf-8")
    from inspectd.config import load_config
    from inspectd.enroll import enroll

    config: Config = load_config(root / "config.toml")
    assert isinstance(config.defaults, ProductSettings)
    goods = generate_images(tmp_path / "goods", n_good=10, n_defect=0, size=(256, 256), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enroll(config, "tiles", goods[0].parent)
    return root


def test_an_operator_session_in_a_real_window(x_session: Session, plant: Path) -> None:
    s = x_session
    url = f"sqlite:///{plant / 'inspectd.db'}"
    with s.log.open("w") as log:
        app = subprocess.Popen([sys.executable, "-m", "gui.app", "--config", str(plant / "config.toml")],
                               env=s.env, stdout=log, stderr=subprocess.STDOUT)
    locker = None
    try:
        sign_in = s.wait_window("who is working")
        s.focus(sign_in)
        s.shot("sign-in")
        s.type("Kim")
        time.sleep(0.5)
        s.shot("sign-in-typed")
        s.keys("Return")
        main = s.wait_window("inspectd review .* Kim Weber")  # "·" is two bytes to xdotool's regex
        s.focus(main)
        time.sleep(2.0)  # first image and heatmap decoded
        s.shot("first-start")
        s.keys("d", "o", "Down", "s")
        time.sleep(1.0)
        s.shot("after-three-decisions")

        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(plant / "inspectd.db")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert locker.stdout.readline().strip() == "locked"
        s.keys("d", "o")
        time.sleep(4.0)
        s.shot("database-locked")
        locker.stdin.write("\n")
        locker.stdin.flush()
        locker.wait(timeout=10)
        locker = None
        time.sleep(4.0)
        s.shot("lock-released-saved")

        s.keys("g")  # the current item is a defect image: add it to the good set
        s.wait_window("Add to the good set")
        s.shot("good-set-confirmation")
        s.keys("alt+a")
        s.wait_window("Model versions: tiles", timeout=120)
        time.sleep(6.0)  # the candidate's preview rescored the queue
        s.shot("candidate-ready")
        s.keys("alt+a")  # activate the candidate
        s.wait_window("Activate model version")
        s.keys("alt+y")
        time.sleep(2.0)
        s.shot("candidate-activated")
        s.keys("Escape")
        s.gone("Model versions")
        s.focus(main)
        s.keys("u")  # undo the good-set decision: the image leaves, v0001 is back
        time.sleep(3.0)
        s.shot("undo-restored-v0001")
        s.keys("F1")
        s.wait_window("Keyboard shortcuts")
        s.shot("shortcut-overview")
        s.keys("Escape")
        s.focus(main)

        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(plant / "inspectd.db")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert locker.stdout.readline().strip() == "locked"
        s.keys("d")
        time.sleep(1.5)
        s.keys("alt+F4")
        s.wait_window("Decisions not yet saved")
        s.shot("closing-with-unsaved")
        started = time.monotonic()
        s.keys("alt+c")  # close now, keep them
        assert app.wait(timeout=20) == 0
        closing_s = time.monotonic() - started
    finally:
        if locker is not None and locker.poll() is None:
            locker.stdin.write("\n")
            locker.stdin.flush()
            locker.wait(timeout=10)
        if app.poll() is None:
            app.kill()
    assert closing_s < 5.0, closing_s  # no freeze under the lock
    kept = list((plant / "unsaved").glob("unsaved-*.json"))
    assert len(kept) == 1 and '"operator": "Kim Weber"' in kept[0].read_text()
    with open_database(url, create=False) as db:
        decisions = [r for r in db.query_results()]
        assert decisions
        history = [(a.previous_version, a.version, a.activated_by) for a in db.activation_history("tiles")]
        assert history == [(None, "v0001", "Kim Weber"), ("v0001", "v0002", "Kim Weber"),
                           ("v0002", "v0001", "Kim Weber")]
        operators = {r.operator for item_id in range(1, 40) for r in db.review_history(item_id)}
        assert operators == {"Kim Weber"}
    assert len(s.shots) == 12 and all(shot.stat().st_size > 10_000 for shot in s.shots)
