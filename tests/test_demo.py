"""The README's first command: the whole loop on generated sample products."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspectd.config import load_config
from inspectd.db import open_database
from inspectd.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    lines: list[str] = []
    workdir = tmp_path / "demo"
    assert run_demo(workdir, say=lines.append) == 0
    config = load_config(workdir / "config.toml")
    with open_database(config.database_url, create=False) as db:
        rows = db.query_results()
    dropped = sorted(p.name for p in (workdir / "drop").glob("*/*.png"))
    assert sorted(Path(r["path"]).name for r in rows) == dropped and len(dropped) == 28
    assert not list((workdir / "drop").glob("*/*.part"))  # temporary names never scored
    assert all(Path(r["heatmap_path"]).is_file() for r in rows)
    flagged = [r for r in rows if r["verdict"] == "NG"]
    defects = [r for r in rows if "good" not in Path(r["path"]).name]
    # Even with random weights the sample defects must mostly be caught.
    assert len([r for r in flagged if r in defects]) >= len(defects) * 0.75
    assert any(line.startswith("defects flagged:") for line in lines)
    assert any("RANDOM" in line for line in lines)
