"""`inspectd results` and `inspectd db upgrade` on SQLite and PostgreSQL, and the
one-line usage errors of every subcommand (the program name printed once)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from inspectd import cli
from inspectd.db import SCHEMA_VERSION, open_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inspectd.db'}"
    return request.getfixturevalue("postgres_database").owner_url


@pytest.fixture
def plant_config(tmp_path: Path, database_url: str) -> Path:
    """Results of three stations of two line PCs, as one plant database holds them."""
    with open_database(database_url) as db:
        for index, (station, verdict) in enumerate([("line1-cam1", "OK"), ("line1-cam1", "NG"),
                                                    ("line2-cam1", "NG"), ("line2-cam2", "OK")]):
            path = f"/srv/drop/{station}/{index}.png"
            item_id, _ = db.add_item(path, 10, index, hashlib.sha256(path.encode()).hexdigest(), "part", station)
            db.claim_pending(None, 1)
            db.record_result(item_id, raw_score=index + 1.0, normalized_score=(index + 1.0) / 2, verdict=verdict,
                             model_version="v0001", threshold=2.0, timings={"total": 5.0},
                             heatmap_path=f"/heat/{index}.png", anomaly_map_path=None)
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "{database_url}"\n')
    return config


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_results_json_is_json_lines_like_format_json(capsys, plant_config: Path) -> None:
    code, out, err = run(capsys, "--config", plant_config, "results", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["station"] for row in rows] == ["line1-cam1", "line1-cam1", "line2-cam1", "line2-cam2"]
    assert rows[1]["verdict"] == "NG" and rows[1]["timings"] == {"total": 5.0}
    assert run(capsys, "--config", plant_config, "results", "--format", "json")[1] == out


def test_results_filter_every_station(capsys, plant_config: Path) -> None:
    code, out, _ = run(capsys, "--config", plant_config, "results", "--json", "--station", "line2-cam1")
    assert code == 0 and [json.loads(line)["path"] for line in out.splitlines()] == ["/srv/drop/line2-cam1/2.png"]
    code, out, _ = run(capsys, "--config", plant_config, "results", "--verdict", "NG")
    assert code == 0 and "line1-cam1" in out and "line2-cam1" in out and "line2-cam2" not in out
    code, out, _ = run(capsys, "--config", plant_config, "results", "--format", "csv", "--station", "line2-cam2")
    assert out.splitlines()[0].startswith("item_id,path") and len(out.splitlines()) == 2


@pytest.mark.parametrize("argv, words", [
    (["results", "--jsn"], "results: unrecognized arguments: --jsn (see 'inspectd results --help')"),
    (["results", "--json", "--format", "csv"], "results: argument --format: not allowed with argument --json"),
    (["results", "--limit", "many"], "results: argument --limit: invalid int value: 'many'"),
    (["db", "upgrade", "--bogus"], "db upgrade: unrecognized arguments: --bogus"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
])
def test_usage_errors_name_the_program_once(argv: list[str], words: str, capsys, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("inspectd: ") and line.count("inspectd:") == 1 and "inspectd inspectd" not in line
    assert words in line


def test_db_upgrade_creates_the_schema_and_reports_its_version(capsys, database_url: str,
                                                               tmp_path: Path) -> None:
    code, out, err = run(capsys, "--config", tmp_path / "missing.toml", "db", "upgrade", "--url", database_url)
    assert code == 1 and "missing.toml" in err  # an explicit --config must exist
    (tmp_path / "empty.toml").write_text("")
    code, out, err = run(capsys, "--config", tmp_path / "empty.toml", "db", "upgrade", "--url", database_url)
    assert code == 0, err
    assert out.strip().endswith(f"schema version {SCHEMA_VERSION}")
    with open_database(database_url, create=False) as db:
        assert db.query_results() == []
