"""`inspectd products`: products, model versions, which one is active, thresholds, history."""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import torch

from ..active import existing_database
from ..cli import print_json_lines, print_table
from ..config import Config
from ..db import Database
from ..device import resolve_device
from ..errors import ConfigError
from ..precision import enrolled_precision, scoring_precision
from ..lifecycle import STATE_ACTIVE, VersionInfo, version_states
from ..store import ModelStore


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("products", parents=[common], help="list products, model versions and the active one")
    parser.add_argument("--all-versions", action="store_true",
                        help="list every version with its state (active, candidate, withdrawn, previous)")
    parser.add_argument("--history", action="store_true", help="who activated which version, when and why")
    parser.add_argument("--product", help="only this product")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    store = ModelStore(config.store_dir)
    device = _scoring_device(config)
    products = [args.product] if args.product else store.products()
    database = existing_database(config.database_url)
    with database if database is not None else nullcontext():
        if args.history:
            return _print_history(database, products, args.json)
        rows = []
        for product in products:
            infos = version_states(database, store, product)
            activation = database.active_activation(product) if database is not None else None
            shown = infos if args.all_versions else [i for i in infos if i.state == STATE_ACTIVE] or infos[-1:]
            rows.extend(_describe(info, len(infos), activation, device) for info in shown)
    if args.json:
        print_json_lines(rows)
    elif rows:
        print_table([(r["product"], r["version"], r["versions"], r.get("bank_size"), r.get("threshold"),
                      r.get("weights"), _precision_cell(r), r.get("created_at") or r.get("error"), r["state"],
                      r.get("activated_by")) for r in rows],
                    ("product", "version", "versions", "bank size", "threshold", "weights", "precision",
                     "created / error", "state", "activated by"))
        for r in rows:
            if r.get("precision_fallback"):
                print(f"PRECISION FALLBACK {r['product']} {r['version']}: {r['precision_fallback']}")
    else:
        print(f"no products enrolled in {config.store_dir}")
    return 0


def _scoring_device(config: Config) -> torch.device:
    """The device this machine would score on (the CPU where the configured one is missing)."""
    try:
        return resolve_device(config.device)
    except ConfigError:
        return torch.device("cpu")


def _precision_cell(row: dict) -> str:
    enrolled, scoring = row.get("precision"), row.get("scoring_precision")
    if enrolled is None:
        return ""
    return enrolled if scoring == enrolled else f"{enrolled} (scored {scoring})"


def _describe(info: VersionInfo, n_versions: int, activation, device: torch.device) -> dict:
    row: dict = {"product": info.product, "version": info.version, "versions": n_versions, "state": info.state,
                 "active": info.state == STATE_ACTIVE}
    if info.state == STATE_ACTIVE:
        row["activated_by"] = activation.activated_by if activation is not None else "(newest version)"
        if activation is not None:
            row["activated_at"] = activation.activated_at.isoformat(timespec="seconds")
    if info.added_from_review:
        row["added_from_review"] = list(info.added_from_review)
    meta = info.metadata
    if meta:
        enrolled = enrolled_precision(meta, device)
        choice = scoring_precision(enrolled, device)
        row.update(precision=enrolled, scoring_precision=choice.precision, precision_fallback=choice.fallback)
    try:
        return {**row, "bank_size": meta["coreset"]["size"], "threshold": meta["calibration"]["threshold"],
                "weights": meta["weights"]["source"], "backbone": meta["settings"]["backbone"],
                "images": info.images, "parent_version": info.parent_version, "created_at": meta["created_at"]}
    except (KeyError, TypeError):
        return {**row, "error": info.error or "model.json lacks expected fields"}


def _print_history(database: Database | None, products: list[str], as_json: bool) -> int:
    rows = []
    for product in products:
        for record in database.activation_history(product) if database is not None else []:
            rows.append({"product": product, "version": record.version, "previous_version": record.previous_version,
                         "activated_by": record.activated_by,
                         "activated_at": record.activated_at.isoformat(timespec="seconds"), "reason": record.reason})
    if as_json:
        print_json_lines(rows)
    elif rows:
        print_table([(r["product"], r["activated_at"], r["previous_version"] or "", r["version"], r["activated_by"],
                      r["reason"]) for r in rows], ("product", "when", "from", "to", "by", "reason"))
    else:
        print("no activations recorded: every product uses its newest version")
    return 0
