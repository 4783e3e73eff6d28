"""systemd notify protocol (``sd_notify``) without extra dependencies.

With ``Type=notify`` and ``WatchdogSec=`` in the unit file, the daemon calls
:func:`ready` once it serves, :func:`watchdog_ping` at least every half of
:func:`watchdog_interval`, :func:`status` for ``systemctl status`` and
:func:`stopping` on shutdown.  Outside systemd (no ``$NOTIFY_SOCKET``) every call
is a no-op returning False.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send *message* (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; True if it was sent.

    Abstract-namespace sockets (``@name``) are supported.  Failures are logged, never
    raised: a monitoring hiccup must not stop the daemon.
    """
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    address = _socket_address(target)
    if address is None:
        log.warning("unsupported NOTIFY_SOCKET %r (expected a path or @abstract name)", target)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify %r to %s failed: %s", message, target, exc)
        return False
    return True


def ready() -> bool:
    """Tell systemd that start-up is complete."""
    return notify("READY=1")


def status(text: str) -> bool:
    """Set the one-line status shown by ``systemctl status``."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog_ping() -> bool:
    """Keep-alive for ``WatchdogSec=``."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Tell systemd that shutdown has begun."""
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None when the
    watchdog is off, the value is invalid, or ``$WATCHDOG_PID`` names another process.
    Ping at least every half of it."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring invalid WATCHDOG_USEC=%r", usec)
        return None
    return value / 1_000_000 if value > 0 else None


def _socket_address(target: str) -> str | bytes | None:
    """The AF_UNIX address for a ``$NOTIFY_SOCKET`` value, or None if unsupported."""
    if target.startswith("@"):
        return b"\0" + target[1:].encode()
    if target.startswith("/"):
        return target
    return None
