"""`inspectd run`: the inspection daemon (normally started by systemd)."""

from __future__ import annotations

import argparse

from ..config import Config
from ..daemon.service import Daemon


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("run", parents=[common], help="watch the drop folders and score new images",
                            description="Run the inspection service: watch every [[watch]] folder, score each "
                                        "new image and record results. SIGTERM stops, SIGHUP reloads.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    return Daemon(config, args.config).run()
