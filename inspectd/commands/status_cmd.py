"""`inspectd status`: items per product and state, queue depth, throughput, last error."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from ..cli import print_table
from ..config import Config
from ..db import open_database


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("status", parents=[common], help="show the service's queue and recent throughput")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    with open_database(config.database_url, create=False) as db:
        summary = db.status_summary(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    if args.json:
        print(json.dumps({"counts": summary.counts, "queue_depth": summary.queue_depth,
                          "results_last_hour": summary.results_since,
                          "last_error": None if summary.last_error is None else {
                              "message": summary.last_error.message, "path": summary.last_error.path,
                              "at": summary.last_error.at.isoformat()}}))
        return 0
    states = ("pending", "scoring", "done", "error")
    rows = [(product, *(counts.get(s, 0) for s in states)) for product, counts in sorted(summary.counts.items())]
    print_table(rows, ("product", *states)) if rows else print("no items yet")
    print(f"queue depth: {summary.queue_depth}")
    print(f"scored in the last hour: {summary.results_since} ({summary.results_since / 60:.1f} per minute)")
    if summary.last_error is not None:
        error = summary.last_error
        print(f"last error: {error.at:%Y-%m-%d %H:%M:%S} {error.path}: {error.message}")
    return 0
