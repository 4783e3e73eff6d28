"""sd_notify against real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator

import pytest

from inspectd import sdnotify

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX sockets")


def _receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


@pytest.fixture()
def path_socket(tmp_path, monkeypatch) -> Iterator[socket.socket]:
    """A bound datagram socket in tmp_path, announced in NOTIFY_SOCKET."""
    address = str(tmp_path / "n.sock")
    if len(address) >= 100:  # sun_path limit
        pytest.skip("tmp_path too long for a unix socket path")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        yield sock


def test_helpers_send_the_protocol_messages(path_socket):
    assert sdnotify.ready() is True
    assert _receive(path_socket) == "READY=1"
    assert sdnotify.status("scoring 3 items") is True
    assert _receive(path_socket) == "STATUS=scoring 3 items"
    assert sdnotify.watchdog_ping() is True
    assert _receive(path_socket) == "WATCHDOG=1"
    assert sdnotify.stopping() is True
    assert _receive(path_socket) == "STOPPING=1"


def test_status_text_is_kept_on_one_line(path_socket):
    sdnotify.status("line one\nline two")
    assert _receive(path_socket) == "STATUS=line one line two"


def test_notify_free_form_message(path_socket):
    assert sdnotify.notify("RELOADING=1\nSTATUS=reloading") is True
    assert _receive(path_socket) == "RELOADING=1\nSTATUS=reloading"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract namespace is Linux-only")
def test_abstract_namespace_socket(monkeypatch):
    name = f"inspectd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready() is True
        assert _receive(sock) == "READY=1"


def test_without_notify_socket_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog_ping() is False


def test_unreachable_or_unsupported_socket_returns_false(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.ready() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("2500000", "self", 2.5),
        ("30000000", "other", None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        monkeypatch.delenv(name, raising=False)
        if value is not None:
            replacements = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}
            monkeypatch.setenv(name, replacements.get(value, value))
    assert sdnotify.watchdog_interval() == expected
