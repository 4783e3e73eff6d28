"""Several line PCs on one PostgreSQL database: real `inspectd run` processes, each
with its own drop folder, results folder and station, connected as the line role."""

from __future__ import annotations

import time
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
        pc.wait_ready()
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
