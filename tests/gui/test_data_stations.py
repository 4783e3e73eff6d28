"""The review app's data layer on a plant database: every station's results, on SQLite
and on PostgreSQL, filtered by station, and new rows from another line PC seen live."""

from __future__ import annotations

from pathlib import Path

import pytest

from gui.data import STATE_ALL, QueueFilter, fetch_page, filter_options, poll
from gui.demo import populate
from inspectd.db import open_database

STATIONS = ("line1-cam1", "line2-cam1", "line3-cam2")


@pytest.fixture(params=["sqlite", "postgresql"])
def plant_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plant.db'}"
    return request.getfixturevalue("postgres_database").owner_url


def test_every_station_is_listed_and_filtered(plant_url: str, tmp_path: Path) -> None:
    with open_database(plant_url) as db:
        populate(db, tmp_path, n_good=6, n_defect=6, n_errors=0, stations=STATIONS)
        products, stations = filter_options(db)
        assert stations == list(STATIONS)
        everything = fetch_page(db, QueueFilter(review_state=STATE_ALL), None, 1000)
        assert {row.station for row in everything} == set(STATIONS)
        for station in STATIONS:
            rows = fetch_page(db, QueueFilter(review_state=STATE_ALL, station=station), None, 1000)
            assert rows and {row.station for row in rows} == {station}
        assert sum(len(fetch_page(db, QueueFilter(review_state=STATE_ALL, station=s), None, 1000))
                   for s in STATIONS) == len(everything)


def test_rows_of_another_line_pc_arrive_in_the_open_queue(plant_url: str, tmp_path: Path) -> None:
    with open_database(plant_url) as desk, open_database(plant_url) as line4:
        populate(desk, tmp_path / "a", n_good=2, n_defect=4, n_errors=0, stations=STATIONS[:1])
        wanted = QueueFilter(review_state=STATE_ALL, station="line4-cam1")
        first = poll(desk, wanted, None)
        assert "line4-cam1" not in first.stations
        populate(line4, tmp_path / "b", n_good=2, n_defect=4, n_errors=0, stations=("line4-cam1",), seed=1)
        later = poll(desk, wanted, first.marks)
        assert later.changed and "line4-cam1" in later.stations
        assert later.new_rows and {row.station for row in later.new_rows} == {"line4-cam1"}
