"""The `inspectd` command line. Exit status: 0 success, 1 failure, 2 usage error.
Errors are one line on stderr; --debug shows tracebacks."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from .config import Config, load_config
from .daemon import early_stop
from .errors import InspectdError, UsageError
from .naming import validate_product_name

log = logging.getLogger("inspectd")
PROG = "inspectd"
Command = Callable[[argparse.Namespace, Config], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage and exits 2
        # main() prints "inspectd: " before every message; a subcommand names itself.
        command = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{command}: {message} (see 'inspectd {command} --help')" if command
                         else f"{message} (see 'inspectd --help')")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: the options are accepted before and after the subcommand; without it the
    # subparser's defaults would overwrite a value given before the subcommand.
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="configuration file (default: $INSPECTD_CONFIG, ./config.toml, "
                        "/etc/inspectd/config.toml)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logging")
    parser = _Parser(prog=PROG, description="PatchCore visual inspection for factory lines.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from . import commands  # the subcommands live beside, one module each

    for register in commands.REGISTRY:
        register(sub, common)
    return parser


def setup_logging(level: str, debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else getattr(logging, level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    from .backbone import RandomWeightsWarning  # imports torch: not before a stop can be caught

    # The backbone both logs and warns about random weights; the log line is enough here.
    warnings.filterwarnings("ignore", category=RandomWeightsWarning)


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in *argv*, read without importing the subcommands."""
    peek = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    peek.add_argument("--config")
    peek.add_argument("command", nargs="?")
    try:
        return peek.parse_known_args(argv)[0].command
    except argparse.ArgumentError:  # the real parser reports it
        return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if _command_in(argv) == "run":
        early_stop.catch()  # before the subcommands import torch (seconds)
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:  # name the subcommand whose options these are not
            command = getattr(args, "command_name", args.command)
            raise UsageError(f"{command}: unrecognized arguments: {' '.join(unknown)} "
                             f"(see 'inspectd {command} --help')")
        args.config, args.debug = getattr(args, "config", None), getattr(args, "debug", False)
        config = load_config(args.config)
        setup_logging(config.log_level, args.debug)
        if getattr(args, "product", None):
            validate_product_name(args.product)
        return int(args.handler(args, config) or 0)
    except UsageError as exc:
        print(f"inspectd: {exc}", file=sys.stderr)
        return 2
    except InspectdError as exc:
        if debug:
            log.exception("failed")
        print(f"inspectd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("inspectd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # an unexpected failure is still one line unless --debug
        if debug:
            raise
        print(f"inspectd: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return 1


def print_json_lines(rows: Sequence[dict]) -> None:
    for row in rows:
        print(json.dumps(row, default=str))


def print_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> None:
    """A plain aligned text table on stdout."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4f}"  # nan: not applicable
    return "" if value is None else str(value)


def existing_dir(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise UsageError(f"not a folder: {value}")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
