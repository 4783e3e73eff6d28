"""`inspectd products`: list products, versions, bank sizes and thresholds."""

from __future__ import annotations

import argparse

from ..cli import print_json_lines, print_table
from ..config import Config
from ..errors import ModelError
from ..store import ModelStore


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("products", parents=[common], help="list enrolled products and model versions")
    parser.add_argument("--all-versions", action="store_true", help="list every version, not only the latest")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    store = ModelStore(config.store_dir)
    rows = []
    for product in store.products():
        versions = store.versions(product)
        for version in versions if args.all_versions else versions[-1:]:
            rows.append(_describe(store, product, version, len(versions)))
    if args.json:
        print_json_lines(rows)
    elif rows:
        print_table([(r["product"], r["version"], r["versions"], r.get("bank_size"), r.get("threshold"),
                      r.get("weights"), r.get("created_at") or r.get("error")) for r in rows],
                    ("product", "version", "versions", "bank size", "threshold", "weights", "created / error"))
    else:
        print(f"no products enrolled in {config.store_dir}")
    return 0


def _describe(store: ModelStore, product: str, version: str, n_versions: int) -> dict:
    row: dict = {"product": product, "version": version, "versions": n_versions}
    try:
        meta = store.open(product, version).metadata
    except ModelError as exc:
        return {**row, "error": str(exc)}
    return {**row, "bank_size": meta["coreset"]["size"], "threshold": meta["calibration"]["threshold"],
            "weights": meta["weights"]["source"], "backbone": meta["settings"]["backbone"],
            "images": len(meta["images"]["bank"]) + len(meta["images"]["calibration"]),
            "created_at": meta["created_at"]}
