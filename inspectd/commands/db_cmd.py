"""`inspectd db upgrade`: create or upgrade the database schema.

On a plant's PostgreSQL server the schema belongs to an owner role; line PCs connect
with a role that may only read and write rows. The owner runs this once after
installing inspectd and after each upgrade of it (README, "A plant: many line PCs").
"""

from __future__ import annotations

import argparse

from ..config import Config
from ..db import open_database
from ..db.migrations import read_schema_version


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("db", parents=[common], help="database schema administration")
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", parents=[common], help="create or upgrade the schema",
                                 description="Create the schema in an empty database, or upgrade an older one "
                                             "to this inspectd's version. Run it as the database's owner role.")
    upgrade.add_argument("--url", metavar="URL", help="database URL (default: database_url of the configuration)")
    upgrade.set_defaults(handler=run_upgrade, command_name="db upgrade")


def run_upgrade(args: argparse.Namespace, config: Config) -> int:
    with open_database(args.url or config.database_url) as db:
        with db.engine.connect() as connection:
            version = read_schema_version(connection)
        print(f"database {db.url}: schema version {version}")
    return 0
