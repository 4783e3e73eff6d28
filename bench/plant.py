"""Plant benchmark (a script, not a test): line PCs on one PostgreSQL server, verdicts over MQTT.

    python bench/plant.py                       # 4 daemons x 500 images, 2 kill -9s, 60 s broker outage
    python bench/plant.py --daemons 2 --images 100 --outage 10   # a quick look

Starts a PostgreSQL server (initdb into a temporary folder, durable settings: fsync
on, so commit times are real) and a Mosquitto broker on loopback ports, enrolls a
small product, and runs one `inspectd run` per line PC, each with its own drop
folder, results folder, station and MQTT topic, connected as the least-privilege
line role. A subscriber plays the line's controller (QoS 1, persistent session).

1. Burst: every daemon gets --images images dropped at once; daemon 1 is killed
   with SIGKILL twice during its burst and restarted. Prints rows, lost and
   duplicated (by file), the result write time (commit of one row, from the daemons'
   own histogram, p50 by interpolation), the MQTT latency from the row's commit to
   the broker's acknowledgement (the daemons' histogram), and as the controller sees
   it (receive time minus the row's scored_at, which is taken before the commit, so
   it includes the commit itself), p50/p95/p99.
2. Broker outage: a stream of images into daemon 2 at --rate per second; the broker
   is stopped for --outage seconds in the middle of it. Prints messages lost,
   repeats (QoS 1 at-least-once; dropped by item_id), and whether the first-seen
   order per station is the commit order.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from inspectd.config import load_config  # noqa: E402
from inspectd.db import open_database  # noqa: E402
from inspectd.enroll import enroll  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402
from servers import LINE_ROLE, OWNER_ROLE, MosquittoBroker, PostgresServer, Subscriber, free_port  # noqa: E402

PRODUCT = "part"
DEFAULTS = """
[defaults]
backbone = "resnet18"
layers = ["layer1", "layer2"]
weights = "random"
size = {size}
coreset_ratio = 0.2
false_alarm_rate = 0.2
batch_size = 8
"""


class LinePC:
    def __init__(self, root: Path, number: int, store: Path, url: str, broker: int, size: int):
        self.root, self.number = root, number
        self.drop = root / "drop"
        self.drop.mkdir(parents=True)
        self.station = f"line{number}-cam1"
        self.metrics_port = free_port()
        self.config = root / "config.toml"
        self.config.write_text(f"""
store_dir = "{store}"
database_url = "{url}"
results_dir = "{root / 'results'}"
state_dir = "{root / 'state'}"
device = "cpu"
{DEFAULTS.format(size=size)}
[daemon]
settle_seconds = 0.2
reconcile_seconds = 5.0
runtime_dir = "{root / 'run'}"

[mqtt]
host = "127.0.0.1"
port = {broker}
topic = "plant/{{station}}/verdict"

[metrics]
port = {self.metrics_port}

[[watch]]
path = "{self.drop}"
product = "{PRODUCT}"
station = "{self.station}"
""")
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        log = (self.root / f"daemon{self.starts}.log").open("w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.starts += 1

    def ready(self) -> bool:
        return "inspectd running" in (self.root / f"daemon{self.starts - 1}.log").read_text()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)

    def scrape(self) -> dict[tuple[str, tuple], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def rows_of(url: str) -> list[dict]:
    with open_database(url, create=False) as db:
        return db.query_results()


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def summed_buckets(pcs: list[LinePC], histogram: str) -> list[tuple[float, float]]:
    """A histogram of all daemons, summed (a restarted one counts since its last start)."""
    summed: Counter[float] = Counter()
    for pc in pcs:
        for (name, labels), value in pc.scrape().items():
            if name == f"{histogram}_bucket":
                summed[float(dict(labels)["le"])] += value
    return list(summed.items())


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemons", type=int, default=4)
    parser.add_argument("--images", type=int, default=500, help="images per daemon in the burst")
    parser.add_argument("--kills", type=int, default=2, help="kill -9s of daemon 1 during its burst")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the broker is down (0: skip)")
    parser.add_argument("--rate", type=float, default=4.0, help="images per second during the outage check")
    parser.add_argument("--size", type=int, default=64, help="network input size")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inspectd-plant-"))
    server = PostgresServer(durable=True).start()
    broker = MosquittoBroker().start()
    pcs: list[LinePC] = []
    controller = None
    try:
        database = server.create_database("plant")
        owner_url, line_url = server.url(database, OWNER_ROLE), server.url(database, LINE_ROLE)
        open_database(owner_url).close()
        (work / "enroll").mkdir()
        config = work / "enroll" / "config.toml"
        config.write_text(f'store_dir = "{work / "models"}"\ndevice = "cpu"\n{DEFAULTS.format(size=args.size)}')
        good = generate_images(work / "good", n_good=12, n_defect=0, category="washer", size=(96, 96), seed=1)
        enroll(load_config(config), PRODUCT, good[0].parent)
        samples = generate_images(work / "samples", n_good=8, n_defect=4, category="washer", size=(96, 96), seed=3)
        controller = Subscriber(broker, "plant-controller", topic="plant/#")
        pcs = [LinePC(work / f"line{n}", n, work / "models", line_url, broker.port, args.size)
               for n in range(1, args.daemons + 1)]
        for pc in pcs:
            pc.start()
        wait_for(lambda: all(pc.ready() for pc in pcs), 300, "the daemons to start")
        print(f"machine: {os.cpu_count()} cores; {args.daemons} daemons on PostgreSQL {server.port} "
              f"(durable), broker {broker.port}; work folder {work}")

        # -- 1. the burst with kill -9s ----------------------------------------------------
        expected: list[str] = []
        started = time.monotonic()
        for pc in pcs:
            for i in range(args.images):
                target = pc.drop / f"{pc.station}_{i:04d}.png"
                target.write_bytes(samples[i % len(samples)].read_bytes())
                expected.append(str(target))
        first = pcs[0]
        for kill in range(args.kills):
            goal = args.images * (kill + 1) // (args.kills + 2)
            wait_for(lambda: sum(r["station"] == first.station for r in rows_of(line_url)) >= goal, 600,
                     f"{goal} rows of {first.station}")
            first.kill()
            print(f"kill -9 of {first.station} at >= {goal} of its rows; restarted")
            first.start()
        total = args.daemons * args.images
        wait_for(lambda: len(rows_of(line_url)) >= total, 1800, f"{total} rows")
        elapsed = time.monotonic() - started
        rows = rows_of(line_url)
        by_path = Counter(r["path"] for r in rows)
        lost = len(set(expected) - set(by_path))
        duplicated = sum(n - 1 for n in by_path.values() if n > 1)
        item_ids = {r["item_id"] for r in rows}
        wait_for(lambda: item_ids <= {m["item_id"] for m in controller.messages}, 120, "every MQTT message")
        scored = {r["item_id"]: epoch(r["scored_at"]) for r in rows}
        first_seen: dict[int, float] = {}
        for message in controller.messages:
            first_seen.setdefault(message["item_id"], message["_received"])
        latencies = [first_seen[i] - scored[i] for i in item_ids]
        write = summed_buckets(pcs, "inspectd_result_write_seconds")
        delivery = summed_buckets(pcs, "inspectd_mqtt_delivery_seconds")
        print(f"\nburst: {args.daemons} daemons x {args.images} images, {args.kills} kill -9 of one daemon, "
              f"{elapsed:.0f} s ({len(rows) / elapsed:.1f} images/s in all)")
        print(f"  rows {len(rows)} (expected {total}), lost {lost}, duplicated {duplicated}")
        print(f"  result write (row commit) p50 {histogram_quantile(write, 0.5) * 1000:.1f} ms, "
              f"p95 {histogram_quantile(write, 0.95) * 1000:.1f} ms (daemons' histograms, "
              f"{int(max(c for _, c in write))} writes since each daemon's last start)")
        print(f"  MQTT row committed -> broker's PUBACK: p50 {histogram_quantile(delivery, 0.5) * 1000:.1f} ms, "
              f"p95 {histogram_quantile(delivery, 0.95) * 1000:.1f} ms (daemons' histograms)")
        print(f"  MQTT scored_at -> received: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
              f"p95 {percentile(latencies, 0.95) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms "
              f"(messages {len(controller.messages)}, repeats {len(controller.messages) - len(first_seen)})")
        burst_ok = lost == 0 and duplicated == 0 and len(rows) == total

        # -- 2. the broker outage ------------------------------------------------------------
        outage_ok = True
        if args.outage > 0:
            pc = pcs[1 % len(pcs)]
            before = len(controller.messages)
            count = int(args.rate * (args.outage + 20))
            stopped_at = restarted_at = None
            stream_started = time.monotonic()
            for i in range(count):
                target = pc.drop / f"stream_{i:04d}.png"
                target.write_bytes(samples[i % len(samples)].read_bytes())
                now = time.monotonic() - stream_started
                if stopped_at is None and now >= 10:
                    broker.stop()
                    stopped_at = time.monotonic()
                    print(f"\nbroker stopped for {args.outage:.0f} s while images stream into {pc.station}")
                if stopped_at is not None and restarted_at is None and time.monotonic() - stopped_at >= args.outage:
                    broker.start()
                    restarted_at = time.monotonic()
                time.sleep(max(0.0, (i + 1) / args.rate - (time.monotonic() - stream_started)))
            if restarted_at is None:
                time.sleep(max(0.0, args.outage - (time.monotonic() - stopped_at)))
                broker.start()
            wait_for(lambda: sum(r["path"].startswith(str(pc.drop / "stream_")) for r in rows_of(line_url)) >= count,
                     600, "the stream's rows")
            stream_rows = [r for r in rows_of(line_url) if r["path"].startswith(str(pc.drop / "stream_"))]
            ids = {r["item_id"] for r in stream_rows}
            wait_for(lambda: ids <= {m["item_id"] for m in controller.messages}, 300, "the stream's messages")
            time.sleep(2.0)
            messages = [m for m in controller.messages[before:] if m["item_id"] in ids]
            seen_order = list(dict.fromkeys(m["item_id"] for m in messages))
            commit_order = [r["item_id"] for r in sorted(stream_rows, key=lambda r: (r["scored_at"], r["item_id"]))]
            lost_messages = len(ids - set(seen_order))
            repeats = len(messages) - len(seen_order)
            in_order = seen_order == commit_order
            print(f"  stream of {count} images at {args.rate:g}/s: rows {len(stream_rows)}, messages lost "
                  f"{lost_messages}, repeats {repeats} (QoS 1 at-least-once, dropped by item_id), "
                  f"first-seen order = commit order: {in_order}")
            outage_ok = lost_messages == 0 and in_order and len(stream_rows) == count
        print(f"\n{'PASS' if burst_ok and outage_ok else 'FAIL'}")
    finally:
        for pc in pcs:
            pc.stop()
        if controller is not None:
            controller.close()
        broker.close()
        server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
