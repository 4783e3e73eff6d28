"""Signals that reach `inspectd run` while it is still starting.

Loading torch and the models takes seconds, and systemd may stop or reload the
service in that time (`systemctl stop`, a shutdown, `systemctl reload`). Python's
default action for SIGTERM and SIGHUP kills the process mid-import; instead the CLI
calls `catch()` before its heavy imports, the signals are remembered here, and the
daemon acts on them once it runs: it stops cleanly (exit 0) before taking any work,
or re-reads its configuration. This module imports nothing heavy on purpose.
"""

from __future__ import annotations

import signal
from types import FrameType

_stop_signal: str | None = None
_reload = False


def _remember(signum: int, frame: FrameType | None) -> None:
    global _stop_signal, _reload
    if signum == signal.SIGHUP:
        _reload = True
    else:
        _stop_signal = signal.Signals(signum).name


def catch() -> None:
    """Remember SIGTERM, SIGINT and SIGHUP until the daemon installs its own handlers."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _remember)


def stop_signal() -> str | None:
    """The name of the stop signal received during start-up, if any."""
    return _stop_signal


def reload_requested() -> bool:
    return _reload
