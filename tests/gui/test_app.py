"""Start-up: configuration lookup, and databases that must be refused untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

import gui.app
from gui.app import main
from gui.main_window import MainWindow
from inspectd.db import SCHEMA_VERSION


@pytest.fixture()
def dialogs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Error dialogs the app would show (recorded instead of blocking)."""
    shown: list[str] = []
    monkeypatch.setattr(gui.app, "show_error_dialog", shown.append)
    return shown


def write_config(tmp_path: Path, database: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "sqlite:///{database}"\n[review]\noperator = "x"\n', encoding="utf-8")
    return config


def set_schema_version(database: Path, version: int) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE schema_info SET version = ?", (version,))


def stored_version(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT version FROM schema_info").fetchone()[0]


def test_newer_schema_is_refused_clearly(tmp_path: Path, db_url: str, dialogs: list[str], capsys) -> None:
    database = Path(db_url.removeprefix("sqlite:///"))
    set_schema_version(database, SCHEMA_VERSION + 1)
    assert main(["--config", str(write_config(tmp_path, database))]) == 1
    assert "newer than version" in capsys.readouterr().err
    assert dialogs and "cannot be reviewed with this version of inspectd" in dialogs[0]
    assert stored_version(database) == SCHEMA_VERSION + 1


def test_older_schema_is_refused_not_upgraded(tmp_path: Path, db_url: str, dialogs: list[str], capsys) -> None:
    database = Path(db_url.removeprefix("sqlite:///"))
    set_schema_version(database, SCHEMA_VERSION - 1)
    assert main(["--config", str(write_config(tmp_path, database))]) == 1
    assert "older than version" in capsys.readouterr().err
    assert stored_version(database) == SCHEMA_VERSION - 1


def test_missing_database_is_not_created(tmp_path: Path, dialogs: list[str], capsys) -> None:
    database = tmp_path / "nowhere" / "inspectd.db"
    assert main(["--config", str(write_config(tmp_path, database))]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not database.exists() and not database.parent.exists()


def test_config_from_environment_opens_the_window(tmp_path: Path, db_url: str, dialogs: list[str],
                                                  monkeypatch: pytest.MonkeyPatch, qapp) -> None:
    database = Path(db_url.removeprefix("sqlite:///"))
    monkeypatch.setenv("INSPECTD_CONFIG", str(write_config(tmp_path, database)))
    opened: list[MainWindow] = []

    def fake_exec() -> int:  # instead of the event loop: look at the window and close it
        [window] = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        opened.append(window)
        window.close()
        return 0

    monkeypatch.setattr(qapp, "exec", fake_exec)
    assert main([]) == 0
    assert not dialogs and opened[0].person.name == "x" and opened[0].db.url.endswith(database.name)
