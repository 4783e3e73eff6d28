"""`inspectd status`: the service's state and pauses, items per product and state,
queue depth, throughput, last error.

The service part comes from the daemon's status report in its runtime directory,
so a pause for a locked, full or unreachable database is shown even when the
database itself cannot be read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from ..cli import print_table
from ..config import Config
from ..daemon.runtime import read_status, status_path
from ..db import open_database
from ..errors import DatabaseError

STATES = ("pending", "scoring", "done", "error")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("status", parents=[common], help="show the service's state, pauses, queue and throughput")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    service = read_status(status_path(config))
    database: dict[str, Any] | None = None
    database_error = None
    try:
        with open_database(config.database_url, create=False) as db:
            summary = db.status_summary(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
        database = {"counts": summary.counts, "queue_depth": summary.queue_depth,
                    "results_last_hour": summary.results_since,
                    "last_error": None if summary.last_error is None else {
                        "message": summary.last_error.message, "path": summary.last_error.path,
                        "at": summary.last_error.at.isoformat()}}
    except DatabaseError as exc:
        database_error = str(exc)
    if args.json:
        print(json.dumps({"service": service, **(database or {}), "database_error": database_error}))
    else:
        _print_service(service)
        if database is not None:
            _print_database(database)
        else:
            print(f"database: cannot be read: {database_error}")
    return 0 if database is not None else 1


def _print_service(report: dict[str, Any] | None) -> None:
    if report is None:
        print("service: no status report (inspectd run has not run with this configuration)")
        return
    if not report["alive"]:
        print(f"service: NOT RUNNING (last report {_when(report['updated_at'])})")
        if report.get("stop_note"):
            print(f"  at its stop: {report['stop_note']}")
        return
    print(f"service: {report['state']} (pid {report['pid']}, since {_when(report['started_at'])}, "
          f"report {report['age_seconds']:.0f} s old)")
    for pause in report.get("pauses", []):
        print(f"PAUSED since {_when(pause['since'])} ({pause['reason']}): {pause['message']}")
    for product, problem in sorted(report.get("model_problems", {}).items()):
        instead = f"scoring with {problem['using']}" if problem["using"] else "nothing to score with"
        print(f"MODEL PROBLEM {product} {problem['version']}: {problem['problem']} ({instead})")
    for product, fallback in sorted(report.get("precision_fallbacks", {}).items()):
        print(f"PRECISION FALLBACK {product} {fallback['version']}: {fallback['note']}")
    for product, fallback in sorted(report.get("gpu_fallbacks", {}).items()):
        print(f"GPU FALLBACK {product} {fallback['version']} since {_when(fallback['since'])}: {fallback['note']}")
    for folder in report.get("missing_folders", []):
        print(f"WATCHED FOLDER MISSING: {folder}")
    waiting = report.get("waiting_files", {})
    if waiting:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(waiting.items()))
        print(f"files not taken in yet: {sum(waiting.values())} ({reasons})")
    if report.get("unrecorded"):
        print(f"results waiting to be written to the database: {report['unrecorded']}")
    if report.get("offline"):
        print("DATABASE SERVER UNREACHABLE: scoring goes on into the local queue")
    if report.get("local_queue"):
        print(f"local queue (written to the database when it is reachable): {report['local_queue']} entries")


def _print_database(database: dict[str, Any]) -> None:
    rows = [(product, *(counts.get(s, 0) for s in STATES)) for product, counts in sorted(database["counts"].items())]
    print_table(rows, ("product", *STATES)) if rows else print("no items yet")
    print(f"queue depth: {database['queue_depth']}")
    recent = database["results_last_hour"]
    print(f"scored in the last hour: {recent} ({recent / 60:.1f} per minute)")
    error = database["last_error"]
    if error is not None:
        print(f"last error: {error['at'][:19].replace('T', ' ')} {error['path']}: {error['message']}")


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S")
