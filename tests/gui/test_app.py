"""Start-up: configuration lookup, and databases that must be refused untouched."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

import gui.app
import gui.identity
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
    config.write_text(f'database_url = "sqlite:///{database}"\n[review]\noperator = "x"\nunsaved_dir = "unsaved"\n',
                      encoding="utf-8")
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


def test_a_missing_database_file_is_reported_as_missing_and_not_created(tmp_path: Path, dialogs: list[str],
                                                                       capsys) -> None:
    """Issue 9, point 13: the folder exists, the file does not."""
    database = tmp_path / "missing.db"
    assert main(["--config", str(write_config(tmp_path, database))]) == 1
    err = capsys.readouterr().err
    assert f"database file {database} does not exist" in err
    assert "cannot be reviewed with this version" not in dialogs[0] and "does not exist" in dialogs[0]
    assert not database.exists()


def test_the_app_asks_who_is_working_when_operators_are_listed(tmp_path: Path, db_url: str, dialogs: list[str],
                                                               monkeypatch: pytest.MonkeyPatch, qapp) -> None:
    database = Path(db_url.removeprefix("sqlite:///"))
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "sqlite:///{database}"\n[review]\nunsaved_dir = "unsaved"\n'
                      '[[review.operators]]\nname = "Ana Lima"\nbadge = "10442"\n'
                      '[[review.operators]]\nname = "Kim"\nroles = ["quality_engineer"]\n', encoding="utf-8")
    asked: list[object] = []

    def sign_in(settings, current=None, parent=None):
        asked.append(settings)
        return settings.person("10442")  # as if the badge was scanned

    monkeypatch.setattr(gui.identity, "ask_who_is_working", sign_in)
    opened: list[MainWindow] = []

    def fake_exec() -> int:
        [window] = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        opened.append(window)
        window.close()
        return 0

    monkeypatch.setattr(qapp, "exec", fake_exec)
    assert main(["--config", str(config)]) == 0
    assert asked and opened[0].person.name == "Ana Lima" and not opened[0].person.may("quality_engineer")
    monkeypatch.setattr(gui.identity, "ask_who_is_working", lambda *args, **kwargs: None)
    assert main(["--config", str(config)]) == 0  # nobody signed in: the app ends, no window


PLATFORM_PROBE = """
import sys
from gui.app import main
sys.exit(main(["--config", sys.argv[1]]))
"""


def test_a_platform_plugin_that_cannot_load_gets_the_package_hint(tmp_path: Path, db_url: str) -> None:
    """Issue 9, point 14: Qt's xcb plugin with a missing library (here: a copy whose Qt
    libraries are not beside it, as libxcb-cursor0 is missing on a bare Debian)."""
    import PySide6

    plugins = tmp_path / "platforms"
    plugins.mkdir()
    shutil.copy(Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so", plugins)
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": ":987", "QT_QPA_PLATFORM_PLUGIN_PATH": str(plugins),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    config = write_config(tmp_path, Path(db_url.removeprefix("sqlite:///")))
    done = subprocess.run([sys.executable, "-c", PLATFORM_PROBE, str(config)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 1
    assert "xcb platform plugin cannot be loaded" in done.stderr and "cannot open shared object file" in done.stderr
    assert "sudo apt-get install libxcb-cursor0" in done.stderr and "README" in done.stderr
    command = subprocess.run([sys.executable, "-m", "inspectd.cli", "gui", "--config", str(config)],
                             capture_output=True, text=True, timeout=60, env=env)  # the same from `inspectd gui`
    assert command.returncode == 1 and "sudo apt-get install libxcb-cursor0" in command.stderr
    env.pop("DISPLAY")
    done = subprocess.run([sys.executable, "-c", PLATFORM_PROBE, str(config)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 1 and "no display" in done.stderr


def test_the_installed_xcb_plugin_loads_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the packages of the README installed (CI installs them), the check passes."""
    from gui.platform_check import platform_problem

    assert platform_problem({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}) is None
    assert platform_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
