"""`inspectd results`: results filtered by product, verdict and time, as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys

from ..cli import print_json_lines, print_table
from ..config import Config
from ..db import RESULT_EXPORT_FIELDS, open_database
from ..errors import UsageError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("results", parents=[common], help="list or export scoring results")
    parser.add_argument("--product")
    parser.add_argument("--station")
    parser.add_argument("--verdict", choices=("OK", "NG", "ERROR"))
    parser.add_argument("--since", type=parse_time, help="ISO time (e.g. 2026-11-26T08:00) or a duration like 2h, 30m, 7d")
    parser.add_argument("--until", type=parse_time)
    parser.add_argument("--limit", type=int)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--format", choices=("table", "csv", "json"), default="table")
    output.add_argument("--json", dest="format", action="store_const", const="json",
                        help="one JSON object per result (JSON Lines), like score --json; same as --format json")
    parser.set_defaults(handler=run)


def parse_time(value: str) -> dt.datetime:
    """An ISO timestamp (local time if no zone) or a duration back from now."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"not a time or duration: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def run(args: argparse.Namespace, config: Config) -> int:
    with open_database(config.database_url, create=False) as db:
        rows = db.query_results(product=args.product, verdict=args.verdict, since=args.since, until=args.until,
                                station=args.station, limit=args.limit)
    if args.format == "json":
        print_json_lines(rows)
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(RESULT_EXPORT_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    else:
        print_table([(r.get("scored_at"), r.get("product"), r.get("station"), r.get("path"), r.get("verdict"),
                      r.get("normalized_score"), r.get("heatmap_path") or r.get("error")) for r in rows],
                    ("scored at", "product", "station", "image", "verdict", "normalized", "heatmap / error"))
    return 0
