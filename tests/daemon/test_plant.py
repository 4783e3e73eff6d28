"""Several line PCs on one PostgreSQL database: real `inspectd run` processes, each
with its own drop folder, results folder and station, connected as the line role."""

from __future__ import annotations

import os
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from daemon_support import DaemonEnv, copy_as, make_daemon_env

pytestmark = pytest.mark.slow


@pytest.fixture
def line_pcs(tmp_path: Path, model_store: Path, postgres_database) -> list[DaemonEnv]:
    from inspectd.db import open_database

    open_database(postgres_database.owner_url).close()
    pcs = [make_daemon_env(tmp_path / f"line{n}", model_store, postgres_database.line_url, station=f"line{n}-cam1")
           for n in (1, 2, 3)]
    yield pcs
    for pc in pcs:
        pc.kill_all()


def test_three_line_pcs_share_one_database_and_each_scores_only_its_own_files(
        line_pcs: list[DaemonEnv], sample_images: list[Path]) -> None:
    first, second, third = line_pcs
    procs = [pc.start() for pc in line_pcs]
    for pc in line_pcs:
        pc.wait_ready(timeout=240)  # three daemons loading torch at once on two cores
    dropped = {pc.root.name: [copy_as(sample_images[i % 10], pc.drop / f"{pc.root.name}_{i:03d}.png")
                              for i in range(40)] for pc in line_pcs}
    deadline = time.monotonic() + 120
    while not 3 <= sum(r["path"].startswith(str(second.drop)) for r in second.results()) < 40:
        assert time.monotonic() < deadline, "line 2 scored nothing"
        time.sleep(0.02)
    procs[1].kill()  # kill -9 in the middle of line 2's batch
    procs[1].wait(timeout=10)
    restarted = second.start()
    rows = first.wait_results(120, timeout=240)
    for proc in (procs[0], restarted, procs[2]):
        assert first.stop(proc) == 0
    assert len(rows) == 120
    counts = Counter(row["path"] for row in rows)
    assert sorted(counts) == sorted(str(p) for paths in dropped.values() for p in paths)  # none lost
    assert set(counts.values()) == {1}  # none twice
    for pc in line_pcs:
        own = [row for row in rows if row["path"].startswith(str(pc.drop))]
        assert {row["station"] for row in own} == {f"{pc.root.name}-cam1"}
        # scored by this PC's own daemon: the heatmaps are in its own results folder
        assert all(row["heatmap_path"].startswith(str(pc.root / "results")) for row in own), pc.root.name
        assert all(row["verdict"] in ("OK", "NG") for row in own)


def test_every_result_reaches_the_line_over_mqtt_and_the_metrics_count_it(
        tmp_path: Path, model_store: Path, postgres_database, mosquitto_broker, sample_images: list[Path]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from inspectd.db import open_database
    from servers import Subscriber, free_port

    open_database(postgres_database.owner_url).close()
    port = free_port()
    pc = make_daemon_env(tmp_path, model_store, postgres_database.line_url, station="line4-cam1", extra=f"""
mqtt_topic = "plant/line4/cam1/verdict"

[mqtt]
host = "127.0.0.1"
port = {mosquitto_broker.port}

[metrics]
port = {port}
""")
    controller = Subscriber(mosquitto_broker, "controller-line4", topic="plant/line4/#")
    try:
        proc = pc.start()
        pc.wait_ready()
        images = [copy_as(sample_images[i % 10], pc.drop / f"m_{i:02d}.png") for i in range(12)]
        (pc.drop / "broken.png").write_text("not an image at all")
        os.mkfifo(pc.drop / "pipe.png")  # never read: recorded at intake with its error row
        rows = pc.wait_results(14)
        messages = controller.wait_for({row["item_id"] for row in rows})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        assert pc.stop(proc) == 0
    finally:
        controller.close()
        pc.kill_all()
    assert len(images) == 12
    by_item = {message["item_id"]: message for message in messages}
    assert len(by_item) == 14 and len(messages) == 14  # one per row (no outage: no repeats)
    for row in rows:
        message = by_item[row["item_id"]]
        assert message["_topic"] == "plant/line4/cam1/verdict"
        assert {k: message[k] for k in ("path", "station", "product", "verdict", "model_version")} == {
            k: row[k] for k in ("path", "station", "product", "verdict", "model_version")}
        assert message["normalized_score"] == row["normalized_score"] and message["heatmap_path"] == row["heatmap_path"]
        assert message["_received"] >= _epoch(row["scored_at"])
    for name in ("broken.png", "pipe.png"):
        message = by_item[next(r["item_id"] for r in rows if r["path"].endswith(name))]
        assert message["verdict"] == "ERROR" and message["error"]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(scraped) for s in family.samples}
    verdicts = Counter(row["verdict"] for row in rows)
    for verdict, number in verdicts.items():
        key = ("inspectd_images_total", (("product", "part"), ("station", "line4-cam1"), ("verdict", verdict)))
        assert samples[key] == number
    assert samples[("inspectd_latency_seconds_count", (("product", "part"), ("station", "line4-cam1")))] == 14
    assert samples[("inspectd_active_model_version", (("product", "part"), ("version", "v0001")))] == 1
    assert samples[("inspectd_mqtt_outbox_depth", ())] == 0 and samples[("inspectd_mqtt_connected", ())] == 1
    assert samples[("inspectd_queue_depth", ())] == 0


def _epoch(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value).timestamp()
