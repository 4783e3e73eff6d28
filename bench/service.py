"""Service benchmark (a script, not a test): a real daemon, images dropped at a rate.

    python bench/service.py --count 500 --rate 5 [--backbone wide_resnet50_2 --size 224]
    python bench/service.py --count 10000 --rate 0 --backbone resnet18 --size 64   # soak
    python bench/service.py --images ../shared/data/bsdata/ballscrew_1130x460 --n-train 200 --rate 8 \
        --precision auto   # issue 12's daemon target: real images, a bank of 200

Prints end-to-end latency from a file's completion to its committed result (p50, p95,
p99), the part of it that is not settle time or the engine's own scoring time (the
daemon's overhead), throughput, the daemon's CPU use idle and busy, GPU use when there
is one, and its memory (RSS) over the run, to show whether it stays flat.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.config import load_config  # noqa: E402
from inspectd.db import open_database  # noqa: E402
from inspectd.enroll import EnrollReport, enroll  # noqa: E402
from inspectd.imageio import list_images  # noqa: E402
from inspectd.store import ModelStore  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """RSS of the daemon once a second, and GPU utilisation when nvidia-smi exists."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.rss, self.gpu = pid, [], []
        self.stop_event = threading.Event()

    def run(self) -> None:
        smi = shutil.which("nvidia-smi")
        while not self.stop_event.wait(1.0):
            try:
                self.rss.append(rss_mb(self.pid))
            except OSError:
                return
            if smi:
                out = subprocess.run([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout.split()
                if out:
                    self.gpu.append(float(out[0]))


def write_config(root: Path, args: argparse.Namespace) -> Path:
    path = root / "config.toml"
    path.write_text(f"""
store_dir = "models"
database_url = "sqlite:///inspectd.db"
results_dir = "results"
device = "{args.device}"
[defaults]
backbone = "{args.backbone}"
weights = "random"
size = {args.size}
precision = "{args.precision}"
[daemon]
settle_seconds = {args.settle}
batch_size = {args.batch}
save_anomaly_maps = {str(not args.no_maps).lower()}
[[watch]]
path = "drop"
product = "bench"
""")
    return path


def drop_images(sources: list[Path], drop: Path, count: int, rate: float) -> dict[str, float]:
    """Write each image under a temporary name and rename it in; returns completion times."""
    completed = {}
    interval = 1.0 / rate if rate > 0 else 0.0
    start = time.monotonic()
    for i in range(count):
        if interval:
            time.sleep(max(0.0, start + i * interval - time.monotonic()))
        target = drop / f"img_{i:06d}.png"
        temp = drop / f"img_{i:06d}.png.part"
        shutil.copyfile(sources[i % len(sources)], temp)
        os.replace(temp, target)
        completed[str(target)] = time.time()
    return completed


def bench_images(args: argparse.Namespace, root: Path) -> tuple[Path, list[Path]]:
    """The good folder to enroll and the images to drop."""
    if args.images is None:
        good = generate_images(root / "good", args.n_train, 0, size=(256, 256), seed=0)
        return good[0].parent, generate_images(root / "sources", 20, 10, size=(256, 256), seed=1)
    good = root / "good"
    good.mkdir()
    for path in list_images(args.images / "train" / "good")[:args.n_train]:
        (good / path.name).symlink_to(path.resolve())
    tests = [p for folder in sorted((args.images / "test").iterdir()) if folder.is_dir() for p in list_images(folder)]
    return good, tests[::max(1, len(tests) // 40)]


def report_enroll(report: EnrollReport, store: ModelStore) -> None:
    meta = store.open(report.product).metadata["precision"]
    print(f"enrolled {report.bank_images} images, bank {report.bank_size}, precision {meta['enrolled']}"
          f"{' (' + meta['note'] + ')' if meta['note'] else ''}; enroll s: "
          + ", ".join(f"{k} {v:.1f}" for k, v in report.timings_s.items()), flush=True)


def wait_for(url: str, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    with open_database(url, create=False) as db:
        while time.monotonic() < deadline:
            rows = db.query_results()
            if len(rows) >= count:
                return rows
            time.sleep(0.5)
        return db.query_results()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=2.0, help="images per second (0: as fast as possible)")
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--settle", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--no-maps", action="store_true", help="do not keep raw anomaly maps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--images", type=Path, help="an MVTec-layout folder (train/good, test/*) instead of "
                                                    "generated images")
    parser.add_argument("--n-train", type=int, default=30, help="good images to enroll")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = load_config(write_config(root, args))
        good, sources = bench_images(args, root)
        report_enroll(enroll(config, "bench", good), ModelStore(config.store_dir))
        (root / "drop").mkdir()
        log = (root / "daemon.log").open("w")
        daemon = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(root / "config.toml")],
                                  stdout=log, stderr=subprocess.STDOUT)
        while "inspectd running" not in (root / "daemon.log").read_text():
            time.sleep(0.2)
        sampler = Sampler(daemon.pid)
        sampler.start()
        idle_start = cpu_seconds(daemon.pid)
        time.sleep(args.idle_seconds)
        idle_cpu = (cpu_seconds(daemon.pid) - idle_start) / args.idle_seconds * 100
        busy_start, wall_start = cpu_seconds(daemon.pid), time.time()
        completed = drop_images(sources, root / "drop", args.count, args.rate)
        rows = wait_for(config.database_url, args.count, timeout=max(600.0, args.count * 2.0))
        busy_cpu = (cpu_seconds(daemon.pid) - busy_start) / (time.time() - wall_start) * 100
        sampler.stop_event.set()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=120)
    report(args, rows, completed, idle_cpu, busy_cpu, sampler, code)
    return 0


def report(args: argparse.Namespace, rows: list[dict], completed: dict[str, float], idle_cpu: float,
           busy_cpu: float, sampler: Sampler, code: int) -> None:
    scored = np.array([dt.datetime.fromisoformat(r["scored_at"]).timestamp() for r in rows])
    done = np.array([completed[r["path"]] for r in rows])
    latency = (scored - done) * 1000
    engine = np.array([sum(v for k, v in (r["timings"] or {}).items() if k != "write") for r in rows])
    overhead = latency - args.settle * 1000 - engine
    print(f"{len(rows)}/{args.count} results, {args.backbone} {args.size} px, batch {args.batch}, "
          f"rate {args.rate or 'max'}/s, settle {args.settle} s; daemon exit status {code}")
    print("end-to-end latency ms (completion -> committed result): "
          + ", ".join(f"p{q} {np.percentile(latency, q):.0f}" for q in (50, 95, 99)))
    print("daemon overhead ms (latency - settle - engine scoring): "
          + ", ".join(f"p{q} {np.percentile(overhead, q):.0f}" for q in (50, 95, 99)))
    print(f"engine scoring per image ms: p50 {np.percentile(engine, 50):.0f}; stages p50: "
          + ", ".join(f"{k} {np.percentile([(r['timings'] or {}).get(k, 0.0) for r in rows], 50):.1f}"
                      for k in sorted({k for r in rows for k in (r["timings"] or {})})))
    print("end-to-end latency minus settle ms: "
          + ", ".join(f"p{q} {np.percentile(latency - args.settle * 1000, q):.0f}" for q in (50, 95, 99)))
    print(f"throughput {len(rows) / (scored.max() - done.min()):.1f} images/s")
    print(f"daemon CPU: idle {idle_cpu:.2f}% of one core over {args.idle_seconds:.0f} s, busy {busy_cpu:.0f}%")
    if sampler.gpu:
        print(f"GPU utilisation: mean {np.mean(sampler.gpu):.0f}%, max {np.max(sampler.gpu):.0f}%")
    rss = sampler.rss
    if rss:
        thirds = [np.mean(part) for part in np.array_split(np.array(rss), 3) if len(part)]
        print(f"daemon RSS MB: start {rss[0]:.0f}, mean by thirds {', '.join(f'{t:.0f}' for t in thirds)}, "
              f"peak {max(rss):.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
