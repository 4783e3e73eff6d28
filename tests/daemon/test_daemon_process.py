"""The daemon as a real subprocess, with real files, a real observer and real SQLite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from daemon_support import PRODUCT, DaemonEnv, copy_as

pytestmark = pytest.mark.slow


def assert_one_result_per_file(rows: list[dict], paths: list[Path]) -> None:
    counts = Counter(r["path"] for r in rows)
    assert sorted(counts) == sorted(str(p) for p in paths)
    assert set(counts.values()) == {1}


def test_files_present_before_start_and_a_burst_of_500(daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    before = [copy_as(sample_images[i % 10], daemon_env.drop / f"before_{i}.png") for i in range(5)]
    proc = daemon_env.start()
    daemon_env.wait_results(5)
    burst = [copy_as(sample_images[i % 10], daemon_env.drop / f"burst_{i:03d}.png") for i in range(500)]
    rows = daemon_env.wait_results(505, timeout=240)
    assert daemon_env.stop(proc) == 0
    assert_one_result_per_file(rows, before + burst)
    assert all(r["verdict"] in ("OK", "NG") for r in rows)
    assert all(Path(r["heatmap_path"]).is_file() for r in rows[:20])


def test_slow_writer_is_scored_only_when_complete(daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    proc = daemon_env.start()
    data = sample_images[0].read_bytes()
    target = daemon_env.drop / "slow.png"
    with target.open("wb") as handle:  # pauses longer than the settle time between chunks
        for start in range(0, len(data), len(data) // 4 + 1):
            handle.write(data[start:start + len(data) // 4 + 1])
            handle.flush()
            time.sleep(0.6)
    finished = time.time()
    rows = daemon_env.wait_results(1)
    assert daemon_env.stop(proc) == 0
    assert len(rows) == 1 and rows[0]["verdict"] in ("OK", "NG"), rows
    scored = rows[0]["scored_at"]
    assert _epoch(scored) >= finished - 0.05


def test_renamed_in_and_temporary_names(daemon_env: DaemonEnv, sample_images: list[Path], tmp_path: Path) -> None:
    proc = daemon_env.start()
    temp = copy_as(sample_images[1], daemon_env.drop / "frame.png.part")
    hidden = copy_as(sample_images[2], daemon_env.drop / ".hidden.png")
    time.sleep(1.0)
    final = daemon_env.drop / "frame.png"
    os.replace(temp, final)
    outside = copy_as(sample_images[3], tmp_path / "elsewhere.png")
    moved = daemon_env.drop / "moved_in.png"
    os.replace(outside, moved)
    rows = daemon_env.wait_results(2)
    time.sleep(1.0)  # nothing else may turn up
    rows = daemon_env.results()
    assert daemon_env.stop(proc) == 0
    assert_one_result_per_file(rows, [final, moved])
    assert hidden.exists()


def test_bad_files_get_error_results(daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    proc = daemon_env.start()
    (daemon_env.drop / "empty.png").write_bytes(b"")
    (daemon_env.drop / "text.png").write_text("not an image")
    (daemon_env.drop / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000) + b"\xff\xd9")
    good = copy_as(sample_images[0], daemon_env.drop / "fine.png")
    rows = daemon_env.wait_results(4)
    assert daemon_env.stop(proc) == 0
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["fine.png"]["verdict"] in ("OK", "NG")
    for name, words in (("empty.png", "empty"), ("text.png", "not a supported image"), ("corrupt.jpg", "corrupt")):
        assert by_name[name]["verdict"] == "ERROR"
        assert words in by_name[name]["error"] and name in by_name[name]["error"]
    assert good.exists()


def test_kill_9_during_a_batch_then_restart_scores_every_file_once(daemon_env: DaemonEnv,
                                                                    sample_images: list[Path]) -> None:
    proc = daemon_env.start()
    daemon_env.wait_ready()
    files = [copy_as(sample_images[i % 10], daemon_env.drop / f"k_{i:03d}.png") for i in range(80)]
    deadline = time.monotonic() + 60
    while len(daemon_env.results()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=10)
    assert len(daemon_env.results()) < 80, "the daemon finished before it could be killed"
    restarted = daemon_env.start()
    rows = daemon_env.wait_results(80, timeout=120)
    assert daemon_env.stop(restarted) == 0
    assert_one_result_per_file(rows, files)


def test_sigterm_exits_cleanly_with_nothing_in_flight(daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    proc = daemon_env.start()
    daemon_env.wait_ready()
    for i in range(30):
        copy_as(sample_images[i % 10], daemon_env.drop / f"t_{i:02d}.png")
    deadline = time.monotonic() + 60
    while not daemon_env.results() and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    assert daemon_env.stop(proc, timeout=30) == 0
    assert time.monotonic() - started < 20
    from inspectd.db import open_database

    with open_database(daemon_env.database_url, create=False) as db:
        summary = db.status_summary()
    assert summary.counts[PRODUCT].get("scoring", 0) == 0
    assert "stopped cleanly" in daemon_env.log()


def test_systemd_notify_messages(daemon_env: DaemonEnv, sample_images: list[Path], tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    messages: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                continue

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    proc = daemon_env.start({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    deadline = time.monotonic() + 60
    while not any("READY=1" in m for m in messages) and time.monotonic() < deadline:
        time.sleep(0.05)
    copy_as(sample_images[0], daemon_env.drop / "n.png")
    daemon_env.wait_results(1)
    time.sleep(1.2)
    assert daemon_env.stop(proc) == 0
    time.sleep(0.3)
    stop.set()
    thread.join()
    sock.close()
    text = "\n".join(messages)
    assert "READY=1" in text and "WATCHDOG=1" in text and "STATUS=" in text and "STOPPING=1" in text
    assert text.index("READY=1") < text.index("STOPPING=1")


def test_another_process_reads_while_the_daemon_writes(daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    proc = daemon_env.start()
    daemon_env.wait_ready()
    reader = subprocess.Popen([sys.executable, "-c", f"""
import time, sys
from inspectd.db import open_database
deadline = time.monotonic() + 90
seen = 0
while time.monotonic() < deadline and seen < 60:
    with open_database({daemon_env.database_url!r}, create=False) as db:
        seen = len(db.query_results())
    time.sleep(0.01)
print(seen)
"""], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for i in range(60):
        copy_as(sample_images[i % 10], daemon_env.drop / f"r_{i:02d}.png")
    out, err = reader.communicate(timeout=150)
    daemon_env.wait_results(60)
    assert daemon_env.stop(proc) == 0
    assert reader.returncode == 0, err
    assert int(out.strip()) == 60


def test_sighup_reloads_the_watch_list(daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    proc = daemon_env.start()
    daemon_env.wait_ready()
    second = daemon_env.root / "drop2"
    text = daemon_env.config_path.read_text()
    daemon_env.config_path.write_text(text + f'\n[[watch]]\npath = "{second}"\nproduct = "{PRODUCT}"\nstation = "cam2"\n')
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "configuration reloaded" not in daemon_env.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    target = copy_as(sample_images[0], second / "after_reload.png")
    rows = daemon_env.wait_results(1)
    assert daemon_env.stop(proc) == 0
    assert rows[0]["path"] == str(target) and rows[0]["station"] == "cam2"


def _epoch(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value).timestamp()
