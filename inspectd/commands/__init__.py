"""Subcommands of the `inspectd` CLI, one module each. Each module has
`register(subparsers, common)` that adds its parser and sets `handler`."""

from __future__ import annotations

from . import (activate_cmd, db_cmd, demo_cmd, enroll_cmd, eval_cmd, gui_cmd, products_cmd, results_cmd, run_cmd,
               score_cmd, status_cmd, weights_cmd)

REGISTRY = [enroll_cmd.register, score_cmd.register, products_cmd.register, activate_cmd.register,
            run_cmd.register, status_cmd.register, results_cmd.register, demo_cmd.register, gui_cmd.register,
            eval_cmd.register, db_cmd.register, weights_cmd.register]
