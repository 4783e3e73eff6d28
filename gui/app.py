"""``inspectd-gui [--config PATH]``: open the review app.

The configuration is found like the CLI finds it (``--config``, ``$INSPECTD_CONFIG``,
``./config.toml``, ``/etc/inspectd/config.toml``).  The database must exist already
and have this inspectd's schema: the review app never creates or upgrades a schema;
a newer schema is refused with a clear message.  Works with or without the daemon.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from inspectd.config import Config, load_config
from inspectd.db import SCHEMA_VERSION, Database, SchemaVersionError, create_db_engine, open_database
from inspectd.db.migrations import read_schema_version
from inspectd.errors import InspectdError

log = logging.getLogger("inspectd.gui")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inspectd-gui", description="Review inspectd results.")
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: $INSPECTD_CONFIG, "
                        "./config.toml, /etc/inspectd/config.toml)")
    parser.add_argument("--debug", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def check_schema(url: str) -> None:
    """Refuse a database whose schema is not exactly this inspectd's, without changing it.

    (``open_database(create=False)`` would still upgrade an older schema.)
    """
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

    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_theme(app)  # type: ignore[arg-type]
    try:
        window = MainWindow(config, db)
        window.show()
        return int(app.exec())
    finally:
        db.close()


if __name__ == "__main__":
    raise SystemExit(main())
