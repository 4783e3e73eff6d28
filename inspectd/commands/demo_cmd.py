"""`inspectd demo`: the whole loop on generated sample products."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config
from ..demo import run_demo


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("demo", parents=[common], help="run the whole loop on generated sample products")
    parser.add_argument("--workdir", type=Path, default=Path("demo-output"),
                        help="folder for the demo's data, models, database and results (replaced)")
    parser.add_argument("--weights", default="random", help="random (default, offline) or imagenet")
    parser.add_argument("--gui", action="store_true", help="open the review app on the results afterwards")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    return run_demo(args.workdir, weights=args.weights, gui=args.gui)
