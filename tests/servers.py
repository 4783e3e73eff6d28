"""Real servers for the tests and benchmarks: PostgreSQL and a Mosquitto MQTT broker.

Both are started from Debian's packages (`.ci/run` installs `postgresql` and `mosquitto`)
into a temporary folder, on a free loopback port, and stopped at the end. PostgreSQL
refuses to run as root, so as root (CI) its processes run as the `postgres` user (or
`nobody`), which owns the data folder.

The PostgreSQL roles follow the README's plant set-up: `inspectd_owner` owns the
database and its schema (it creates and upgrades it), `inspectd_line` is what a line
PC connects as: it may read and write rows, never change the schema or delete.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Callable, TypeVar

import paho.mqtt.client as paho

OWNER_ROLE = "inspectd_owner"
LINE_ROLE = "inspectd_line"
SUPERUSER = "postgres"

# The README's statements for a line PC's role, run in each new database.
LINE_ROLE_GRANTS = f"""
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {LINE_ROLE};
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO {LINE_ROLE};
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {LINE_ROLE};
"""


class ServerMissing(RuntimeError):
    """The server's binaries are not installed."""


Server = TypeVar("Server")


def start_or_skip(start: Callable[[], Server]) -> Server:
    """Start a test server; skip when it is not installed, except in CI (.ci/run
    installs it, so a missing server there is a failure, never a silent skip)."""
    import pytest

    try:
        return start()
    except ServerMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: .ci/run must install it")
        pytest.skip(str(exc))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account to run servers as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerMissing("running as root but neither a 'postgres' nor a 'nobody' account exists")


def _postgres_bin() -> Path:
    """Folder of initdb/pg_ctl: $INSPECTD_TEST_PG_BIN, Debian's newest, or $PATH."""
    explicit = os.environ.get("INSPECTD_TEST_PG_BIN")
    candidates = [explicit] if explicit else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    raise ServerMissing("PostgreSQL server binaries not found (apt-get install postgresql)")


@dataclass(frozen=True)
class PostgresDatabase:
    name: str
    owner_url: str  # creates and upgrades the schema
    line_url: str  # a line PC's role: rows only


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1.

    `durable=False` (tests) turns fsync off for speed; benchmarks keep the defaults so
    that commit latencies are real.
    """

    def __init__(self, *, durable: bool = False, max_connections: int = 200):
        self.durable = durable
        self.max_connections = max_connections
        self.port = 0
        self.root: Path | None = None
        self._user = _unprivileged_user()
        self._bin = _postgres_bin()
        self._names = count()

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> PostgresServer:
        """Create the cluster and start it."""
        self.root = Path(tempfile.mkdtemp(prefix="inspectd-pg-"))
        self._chown(self.root)
        (self.root / "run").mkdir()
        self._chown(self.root / "run")
        self._as_server_user(["initdb", "-D", str(self.root / "data"), "-U", SUPERUSER, "--auth=trust",
                              "-E", "UTF8", "--locale=C", "--no-sync"])
        self.port = free_port()
        self.resume()
        self.execute(f"CREATE ROLE {OWNER_ROLE} LOGIN; CREATE ROLE {LINE_ROLE} LOGIN")
        return self

    def resume(self) -> None:
        """Start the server process (again, after :meth:`halt`) on the same port."""
        assert self.root is not None
        options = ["-c listen_addresses=127.0.0.1", f"-c port={self.port}",
                   f"-c unix_socket_directories={self.root / 'run'}", f"-c max_connections={self.max_connections}"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._as_server_user(["pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "server.log"), "-w",
                              "-t", "60", "-o", " ".join(options), "start"])

    def halt(self) -> None:
        """Stop the server process (its clients lose their connections at once); data is kept."""
        assert self.root is not None
        self._as_server_user(["pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"])

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        if self.root is None:
            return
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -----------------------------------------------------------------
    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database set up like a plant's (owner role, line role's
        rights); returns its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
        self.execute(LINE_ROLE_GRANTS, database=name)
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run statements as the superuser (autocommit, one at a time)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database,
                             autocommit=True) as connection:
            for statement in filter(str.strip, sql.split(";")):
                connection.execute(statement)

    # -- helpers -------------------------------------------------------------------
    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _as_server_user(self, argv: list[str]) -> None:
        argv = [str(self._bin / argv[0]), *argv[1:]]
        kwargs: dict = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=self.root, timeout=120, **kwargs)
        if done.returncode != 0:
            log = (self.root / "server.log") if self.root else None
            tail = log.read_text()[-2000:] if log and log.is_file() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr or done.stdout}\n{tail}")


class MosquittoBroker:
    """A Mosquitto broker on 127.0.0.1 that can be stopped and started again on the
    same port (a broker outage). Persistence is on, so a subscriber's persistent
    session and its queued QoS 1 messages survive the restart, as on a plant broker."""

    def __init__(self, port: int | None = None):
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).is_file():
            raise ServerMissing("mosquitto not found (apt-get install mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="inspectd-mqtt-"))
        self._user = _unprivileged_user()
        self._chown(self.root)
        self.config = self.root / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                               f"persistence_location {self.root}/\nautosave_interval 1\n"
                               f"log_dest file {self.root}/broker.log\nmax_queued_messages 100000\n")
        self._process: subprocess.Popen | None = None

    def start(self) -> MosquittoBroker:
        kwargs: dict = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        self._process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, **kwargs)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self._process.returncode}: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port}: {self.log()[-2000:]}")

    def stop(self) -> None:
        """Stop the broker (it saves its persistent sessions first)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=20)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "broker.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)


class Subscriber:
    """The line's controller: a persistent session (clean_session off) with QoS 1, so
    messages queued for it at the broker survive the broker's restart."""

    def __init__(self, broker: MosquittoBroker, client_id: str, topic: str = "plant/#"):
        self.messages: list[dict] = []
        self.arrived = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.2, 1)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client, userdata, message) -> None:
        with self.arrived:
            self.messages.append({**json.loads(message.payload), "_topic": message.topic,
                                  "_received": time.time()})
            self.arrived.notify_all()

    def wait_for(self, item_ids: set[int], timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not item_ids <= {m["item_id"] for m in self.messages}:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"missing {sorted(item_ids - {m['item_id'] for m in self.messages})[:10]}"
                self.arrived.wait(remaining)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
