"""`inspectd activate --product X --version v0002`: choose the model version the daemon uses."""

from __future__ import annotations

import argparse

from ..config import Config
from ..db import open_database
from ..identity import add_signer_option, quality_engineer
from ..lifecycle import activate
from ..store import ModelStore


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "activate", parents=[common], help="make a model version the active one (or roll back)",
        description="Make VERSION the active model of PRODUCT: the daemon scores with it from its next batch. "
                    "Any stored version can be activated again to roll back; the change is recorded with "
                    "who made it (see `inspectd products --history`).")
    parser.add_argument("--product", required=True)
    parser.add_argument("--version", required=True, help="e.g. v0002 (`inspectd products --all-versions` lists them)")
    add_signer_option(parser, "activates it")
    parser.add_argument("--reason", default="", help="why (recorded in the history)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    person = quality_engineer(config, args.by, "change the active model")
    store = ModelStore(config.store_dir)
    with open_database(config.database_url) as db:
        before = db.active_activation(args.product)
        record = activate(db, store, args.product, args.version, person.name,
                          args.reason or "inspectd activate")
    if (before is not None and before.id == record.id) or record.previous_version == record.version:
        print(f"{args.product}: {record.version} is the active version (recorded)")
    else:
        was = f" (was {record.previous_version})" if record.previous_version else ""
        print(f"{args.product}: {record.version} is active now{was}, set by {record.activated_by}; "
              "the daemon scores with it from its next batch")
    return 0
