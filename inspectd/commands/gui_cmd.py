"""`inspectd gui`: the operators' review app (same as `inspectd-gui`). It says which system
packages to install when Qt's platform plugin cannot load (see gui/platform_check.py)."""

from __future__ import annotations

import argparse

from ..config import Config


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("gui", parents=[common], help="open the review app")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    from gui.app import main as gui_main  # Qt is only imported when the app is wanted

    return gui_main((["--config", args.config] if args.config else []) + (["--debug"] if args.debug else []))
