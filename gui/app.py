"""``inspectd-gui [--config PATH]``: open the review app.

The configuration is found like the CLI finds it (``--config``, ``$INSPECTD_CONFIG``,
``./config.toml``, ``/etc/inspectd/config.toml``).  The database must exist already
and have this inspectd's schema: the review app never creates a database or changes
a schema (a missing file is reported as missing, another schema version is refused
with a clear message).  Then it asks who is working (``[review] operators``).  Works
with or without the daemon.  When Qt's platform plugin cannot load (missing system
libraries), it says which packages to install instead of letting Qt abort.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from inspectd.config import Config, load_config
from inspectd.db import SCHEMA_VERSION, Database, SchemaVersionError, create_db_engine, open_database
from inspectd.db.engine import sqlite_file
from inspectd.db.migrations import read_schema_version
from inspectd.errors import DatabaseError, InspectdError

log = logging.getLogger("inspectd.gui")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inspectd-gui", description="Review inspectd results.")
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: $INSPECTD_CONFIG, "
                        "./config.toml, /etc/inspectd/config.toml)")
    parser.add_argument("--debug", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def check_schema(url: str) -> None:
    """Refuse a missing database, or one whose schema is not exactly this inspectd's,
    without creating or changing anything.

    (``open_database(create=False)`` would still upgrade an older schema, and merely
    connecting to a missing SQLite file creates it.)
    """
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise DatabaseError(f"database file {path} does not exist (is database_url right? the inspectd daemon "
                            "creates it when it first runs)")
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            version = read_schema_version(connection)
    except Exception as exc:  # driver errors: let open_database phrase them
        log.debug("schema check skipped: %s", exc)
        return
    finally:
        engine.dispose()
    if version is not None and version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database has schema version {version}, older than version {SCHEMA_VERSION} of this inspectd; "
            "start the inspectd daemon (or any inspectd command) once to upgrade it, then open the review app")


def open_review_database(config: Config) -> Database:
    """Open the configured database for reviewing: no creation, no upgrade."""
    check_schema(config.database_url)
    return open_database(config.database_url, create=False)


def show_error_dialog(message: str) -> None:
    """Tell a desktop user why the app cannot start (also printed on stderr)."""
    from PySide6.QtWidgets import QApplication, QMessageBox

    if QApplication.instance() is None:
        QApplication(sys.argv[:1])
    QMessageBox.critical(None, "inspectd review", message)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``inspectd-gui`` (and ``inspectd gui``); returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gui.platform_check import hint, platform_problem

    problem = platform_problem()
    if problem is not None:  # Qt would abort without naming the missing package
        print(hint(problem), file=sys.stderr)
        return 1
    try:
        config = load_config(args.config)
        db = open_review_database(config)
    except InspectdError as exc:
        message = f"Cannot open the review database: {exc}"
        if isinstance(exc, SchemaVersionError):
            message = f"This database cannot be reviewed with this version of inspectd.\n\n{exc}"
        print(f"inspectd-gui: error: {exc}", file=sys.stderr)
        show_error_dialog(message)
        return 1
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow
    from gui.theme import apply_theme

    from gui.identity import ask_who_is_working, person_without_asking

    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_theme(app)  # type: ignore[arg-type]
    try:
        person = person_without_asking(config.review) or ask_who_is_working(config.review)
        if person is None:
            return 0  # nobody signed in
        window = MainWindow(config, db, person=person)
        window.show_fitted()
        return int(app.exec())
    finally:
        db.close()


if __name__ == "__main__":
    raise SystemExit(main())
