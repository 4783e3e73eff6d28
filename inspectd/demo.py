"""The first five minutes: sample products, enrollment, the daemon on a drop folder,
images arriving the way cameras deliver them, and the results.

Everything happens under one work folder with its own config.toml, so the same
folder can then be opened in the review app (`inspectd gui --config DIR/config.toml`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import Config, load_config
from .db import open_database
from .enroll import enroll
from .synthetic import DatasetSpec, generate_dataset

PRODUCTS = {"tiles": "cam1", "washer": "cam2"}
IMAGE_SIZE = (256, 256)


def write_config(workdir: Path, weights: str) -> Path:
    # Without ImageNet weights, the shallow layers of a small network separate the
    # sample defects far better than deep random features; with them, the defaults.
    backbone = ('backbone = "resnet18"\nlayers = ["layer1", "layer2"]\nembed_dim = 384\ncoreset_ratio = 0.05\n'
                if weights == "random" else "")
    drop_lines = "\n".join(
        f'[[watch]]\npath = "drop/{product}"\nproduct = "{product}"\nstation = "{station}"\n'
        for product, station in PRODUCTS.items())
    text = f"""# Written by `inspectd demo`. See the repository's config.toml for every option.
store_dir = "models"
database_url = "sqlite:///inspectd.db"
results_dir = "results"
enroll_dir = "enroll"
device = "auto"

[defaults]
{backbone}weights = "{weights}"
size = 224
false_alarm_rate = 0.1
calibration_fraction = 0.25

[daemon]
settle_seconds = 0.5
reconcile_seconds = 10

[review]
unsaved_dir = "unsaved"

# The review app asks who is working (type a name or a badge id).
[[review.operators]]
name = "Demo Operator"
badge = "1001"

[[review.operators]]
name = "Demo Quality Engineer"
badge = "2001"
roles = ["quality_engineer"]

{drop_lines}"""
    path = workdir / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def make_data(workdir: Path) -> dict[str, Path]:
    """A synthetic dataset per product (MVTec AD layout), seeded."""
    roots = {}
    for seed, product in enumerate(PRODUCTS):
        spec = DatasetSpec(category=product, n_train=40, n_test_good=6, n_test_defect=2, size=IMAGE_SIZE, seed=seed)
        roots[product] = generate_dataset(workdir / "data", spec)
    return roots


def enroll_all(config: Config, roots: dict[str, Path], say) -> None:
    for product, root in roots.items():
        good = config.enroll_dir / product / "good"
        shutil.copytree(root / "train" / "good", good, dirs_exist_ok=True)
        started = time.perf_counter()
        report = enroll(config, product, good)
        say(f"enrolled {product}: {report.version}, {report.bank_images} bank + {report.calibration_images} "
            f"calibration images, bank {report.bank_size} x {report.feature_dim}, threshold "
            f"{report.threshold:.3f} ({time.perf_counter() - started:.1f} s)")


def drop_like_a_camera(source: Path, target_dir: Path, index: int) -> Path:
    """Cameras write in several ways; the daemon must take each only once complete."""
    target = target_dir / f"{index:04d}_{source.parent.name}_{source.name}"
    data = source.read_bytes()
    style = index % 3
    if style == 0:  # written under a temporary name, then renamed
        temp = target.with_suffix(".part")
        temp.write_bytes(data)
        os.replace(temp, target)
    elif style == 1:  # written slowly, in chunks
        with target.open("wb") as handle:
            for start in range(0, len(data), len(data) // 4 + 1):
                handle.write(data[start:start + len(data) // 4 + 1])
                handle.flush()
                time.sleep(0.1)
    else:  # written in one go
        target.write_bytes(data)
    return target


def wait_for_results(config: Config, expected: int, timeout: float, daemon: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited early with status {daemon.returncode}")
        try:
            with open_database(config.database_url, create=False) as db:
                rows = db.query_results()
        except Exception:  # the daemon may not have created the schema yet
            rows = []
        if len(rows) >= expected:
            return rows
        time.sleep(0.5)
    return rows


def run_demo(workdir: Path, weights: str = "random", gui: bool = False, say=print) -> int:
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    config_path = write_config(workdir, weights)
    config = load_config(config_path)
    if weights == "random":
        say("NOTE: the demo uses RANDOM backbone weights (no internet needed); scores are for the demo only. "
            "Use --weights imagenet on a machine that can download torchvision's weights.")
    say(f"1/4 making sample products in {workdir / 'data'}")
    roots = make_data(workdir)
    say("2/4 enrolling from good images only")
    enroll_all(config, roots, say)
    say("3/4 starting the daemon and dropping images the way cameras do")
    log_path = workdir / "daemon.log"
    with log_path.open("w") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(config_path)],
                                  stdout=log_file, stderr=subprocess.STDOUT)
        try:
            dropped = 0
            for product, root in roots.items():
                target_dir = workdir / "drop" / product
                target_dir.mkdir(parents=True, exist_ok=True)
                for source in sorted((root / "test").glob("*/*.png")):
                    drop_like_a_camera(source, target_dir, dropped)
                    dropped += 1
            rows = wait_for_results(config, dropped, timeout=240, daemon=daemon)
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
    say(f"4/4 results ({len(rows)} of {dropped} images; daemon log: {log_path})")
    print_results(rows, say)
    say(f"heatmaps: {config.results_dir}")
    say(f"review app: inspectd gui --config {config_path}")
    if gui:
        from gui.app import main as gui_main

        return gui_main(["--config", str(config_path)])
    return 0 if len(rows) == dropped else 1


def print_results(rows: list[dict], say) -> None:
    from .cli import print_table

    print_table([(Path(r["path"]).name, r["product"], r["verdict"], r["normalized_score"],
                  r.get("heatmap_path") or r.get("error")) for r in rows],
                ("image", "product", "verdict", "x threshold", "heatmap / error"))
    truth = [(("good" not in Path(r["path"]).name), r["verdict"] == "NG") for r in rows if r["verdict"] != "ERROR"]
    caught = sum(1 for bad, flagged in truth if bad and flagged)
    false_alarms = sum(1 for bad, flagged in truth if not bad and flagged)
    say(f"defects flagged: {caught} of {sum(1 for bad, _ in truth if bad)}; "
        f"false alarms: {false_alarms} of {sum(1 for bad, _ in truth if not bad)} good images")
