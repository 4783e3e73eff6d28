"""The database server goes away: a real daemon keeps scoring into its local queue,
survives kill -9 while offline, and catches up when the server is back, every file
once, each row's MQTT message after its commit."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from daemon_support import DEFAULTS, PRODUCT, copy_as, make_daemon_env
from inspectd.config import load_config
from inspectd.db import open_database
from inspectd.enroll import enroll
from inspectd.lifecycle import activate
from inspectd.plant.offline_queue import QUEUE_FILE, OfflineQueue
from inspectd.store import ModelStore
from inspectd.synthetic import generate_images
from servers import LINE_ROLE, OWNER_ROLE, PostgresServer, Subscriber, start_or_skip

pytestmark = pytest.mark.slow


def wait_until(condition, timeout: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}:\n{log()[-3000:]}"
        time.sleep(0.1)


def test_scoring_goes_on_while_the_server_is_unreachable_and_catches_up(
        tmp_path: Path, model_store: Path, mosquitto_broker, sample_images: list[Path]) -> None:
    server = start_or_skip(lambda: PostgresServer().start())
    controller = pc = None
    try:
        name = server.create_database()
        # v0002 exists but v0001 is active: a daemon restarted while offline must remember that
        store_dir = tmp_path / "models"
        shutil.copytree(model_store, store_dir)
        engineer = tmp_path / "engineer.toml"
        engineer.write_text(f'store_dir = "{store_dir}"\ndevice = "cpu"\n{DEFAULTS}')
        more = generate_images(tmp_path / "more", n_good=3, n_defect=0, category="washer", size=(96, 96), seed=9)
        assert enroll(load_config(engineer), PRODUCT, more[0].parent, add=True).version == "v0002"
        with open_database(server.url(name, OWNER_ROLE)) as db:
            activate(db, ModelStore(store_dir), PRODUCT, "v0001", "kim", "v0002 flags good parts")
        pc = make_daemon_env(tmp_path, store_dir, server.url(name, LINE_ROLE), station="line5-cam1", extra=f"""
[mqtt]
host = "127.0.0.1"
port = {mosquitto_broker.port}
topic = "plant/{{station}}/verdict"
""")
        controller = Subscriber(mosquitto_broker, "controller-line5", topic="plant/line5-cam1/#")
        heatmaps = lambda: sorted((tmp_path / "results").rglob("q*_heatmap.png"))  # noqa: E731 - scored offline
        proc = pc.start()
        pc.wait_ready()
        online = [copy_as(sample_images[i], pc.drop / f"online_{i}.png") for i in range(3)]
        pc.wait_results(3)

        server.halt()  # the server goes away
        offline = [copy_as(sample_images[i], pc.drop / f"offline_{i}.png") for i in range(3, 9)]
        wait_until(lambda: len(heatmaps()) >= 3, 90, "nothing scored while the server is away", pc.log)
        proc.kill()  # and the line PC crashes while offline
        proc.wait(timeout=10)
        proc = pc.start()
        pc.wait_ready(count=2)
        offline += [copy_as(sample_images[i % 10], pc.drop / f"after_crash_{i}.png") for i in range(3)]
        # A file in the tracker at the crash is found by the scan once the server is back.
        wait_until(lambda: len(heatmaps()) >= len(offline) - 1, 120, "offline files not scored", pc.log)
        assert "PAUSED (database)" in pc.log()
        status = pc.status()["service"]
        assert status["offline"] and status["local_queue"] >= len(offline) - 1
        back_at = datetime.now(timezone.utc)
        server.resume()

        rows = pc.wait_results(12, timeout=120)
        messages = controller.wait_for({row["item_id"] for row in rows}, timeout=60)
        assert pc.stop(proc) == 0
    finally:
        if pc is not None:
            pc.kill_all()
        if controller is not None:
            controller.close()
        server.stop()
    counts = Counter(row["path"] for row in rows)
    assert sorted(counts) == sorted(str(p) for p in online + offline) and set(counts.values()) == {1}
    scored_offline = [row for row in rows if Path(row["heatmap_path"]).name.startswith("q")]
    assert len(scored_offline) >= len(offline) - 1
    for row in scored_offline:  # scored during the outage, recorded after it
        assert datetime.fromisoformat(row["scored_at"]) < back_at, row
        assert row["verdict"] in ("OK", "NG") and Path(row["path"]).name.startswith(("offline_", "after_crash_"))
    assert {row["model_version"] for row in rows} == {"v0001"}  # the active version, also after the crash
    assert {m["item_id"] for m in messages} == {row["item_id"] for row in rows}
    assert all(m["item_id"] > 0 for m in messages)  # database ids: sent after the rows were committed
    assert OfflineQueue(tmp_path / "state" / QUEUE_FILE).depth() == 0
