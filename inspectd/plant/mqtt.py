"""Verdicts to the line over MQTT: one JSON message per result, from the outbox.

The outbox (outbox.py) is the source of truth; this module delivers it in order. A
window of at most WINDOW messages is handed to paho-mqtt at a time; paho sends them
with QoS 1 (or 2) and, after a lost connection, sends the unacknowledged ones again
in order once it has reconnected (it retries on its own, 1 to 30 s apart). A message
leaves the outbox only when the broker acknowledged it, so a broker outage or a
restart of the daemon loses nothing; the price is QoS 1's at-least-once: a consumer
may see a message twice and drops repeats by `item_id`.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho

from .outbox import Outbox
from .settings import MqttSettings

log = logging.getLogger(__name__)
WINDOW = 100  # messages handed to paho and not yet acknowledged
IDLE_WAKE_SECONDS = 1.0


@dataclass(frozen=True)
class Verdict:
    """What the line's controller is told about one result."""

    item_id: int
    path: str
    product: str
    station: str
    verdict: str  # OK, NG or ERROR
    score: float | None
    normalized_score: float | None
    threshold: float | None
    model_version: str | None
    heatmap_path: str | None
    image_path: str | None
    error: str | None
    scored_at: datetime

    def payload(self) -> bytes:
        body: dict[str, Any] = {
            "item_id": self.item_id, "path": self.path, "product": self.product, "station": self.station,
            "verdict": self.verdict, "score": self.score, "normalized_score": self.normalized_score,
            "threshold": self.threshold, "model_version": self.model_version, "heatmap_path": self.heatmap_path,
            "image_path": self.image_path, "error": self.error, "time": self.scored_at.isoformat(),
            "host": socket.gethostname(),
        }
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def default_client_id() -> str:
    # Two clients with one id throw each other off the broker: the process id keeps
    # several daemons on one machine apart.
    return f"inspectd-{socket.gethostname()}-{os.getpid()}"[:64]


class VerdictPublisher:
    """Delivers an outbox to the broker of `settings` from a thread of its own."""

    def __init__(self, settings: MqttSettings, outbox: Outbox,
                 on_delivered: Callable[[int], None] | None = None):
        self.settings, self.outbox = settings, outbox
        self.on_delivered = on_delivered  # called with the item id of each acknowledged message
        self._client = self._make_client()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._feeding = threading.Lock()  # one feeder at a time keeps the order
        self._acked: collections.deque[int] = collections.deque()  # mids, from paho's thread
        self._in_flight: dict[int, tuple[int, int]] = {}  # mid -> (outbox id, item id)
        self._last_fed = 0
        self._connected = False
        self._warned_unreachable = False
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)

    @property
    def broker(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        """Connect in the background (a broker that is down is retried) and deliver."""
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        self._thread.start()
        log.info("MQTT: delivering to %s (%d messages waiting in %s)", self.broker, self.outbox.depth(),
                 self.outbox.path)

    def notify(self) -> None:
        """A message was released: hand it to paho now, from the caller's thread (one
        thread switch less on the way to the line), unless delivery is busy anyway."""
        if self._connected and self._feeding.acquire(blocking=False):
            try:
                self._feed()
            except Exception:  # the delivery thread tries again
                log.exception("MQTT: handing a message over failed; retrying")
            finally:
                self._feeding.release()
        self._wake.set()

    def stop(self, drain_seconds: float = 2.0) -> None:
        """Give the broker up to `drain_seconds` to take what is waiting, then stop;
        anything left stays in the outbox for the next start."""
        deadline = time.monotonic() + drain_seconds
        while self._connected and self.outbox.depth() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()
        left = self.outbox.depth()
        if left:
            log.warning("MQTT: %d messages not yet delivered to %s; they go at the next start", left, self.broker)

    # -- the delivery thread -------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                with self._feeding:
                    self._settle_acknowledged()
                    if self._connected:
                        self._feed()
            except Exception:  # a bug or a full disk must not end delivery for good
                log.exception("MQTT: delivery failed; retrying")
                self._stopping.wait(1.0)
            self._wake.wait(IDLE_WAKE_SECONDS)
        with self._feeding:
            self._settle_acknowledged()

    def _feed(self) -> None:
        room = WINDOW - len(self._in_flight)
        if room <= 0:
            return
        for message in self.outbox.ready_after(self._last_fed, room):
            info = self._client.publish(message.topic, message.payload, qos=self.settings.qos)
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):  # NO_CONN: paho sends it on reconnect
                log.warning("MQTT: publish refused (%s); retrying", paho.error_string(info.rc))
                return
            self._in_flight[info.mid] = (message.id, message.item_id)
            self._last_fed = message.id

    def _settle_acknowledged(self) -> None:
        done: list[tuple[int, int]] = []
        while self._acked:
            entry = self._in_flight.pop(self._acked.popleft(), None)
            if entry is not None:
                done.append(entry)
        if not done:
            return
        self.outbox.remove(message_id for message_id, _ in done)
        if self.on_delivered is not None:
            for _, item_id in done:
                self.on_delivered(item_id)

    # -- paho ----------------------------------------------------------------------
    def _make_client(self) -> paho.Client:
        settings = self.settings
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=settings.client_id or default_client_id(),
                             protocol=paho.MQTTv311, clean_session=True)
        client.max_inflight_messages_set(WINDOW)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 30)
        if settings.username:
            password = settings.password_file.read_text().strip() if settings.password_file else None
            client.username_pw_set(settings.username, password)
        if settings.tls:
            client.tls_set(ca_certs=_optional(settings.ca_file), certfile=_optional(settings.cert_file),
                           keyfile=_optional(settings.key_file))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        return client

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT: broker %s refused the connection: %s", self.broker, reason)
            return
        self._connected = True
        self._warned_unreachable = False
        log.info("MQTT: connected to %s; %d messages waiting", self.broker, self.outbox.depth())
        self._wake.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected and not self._stopping.is_set():
            log.warning("MQTT: lost broker %s (%s); results wait in the outbox and go in order once it is back",
                        self.broker, reason)
        self._connected = False

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        level = logging.DEBUG if self._warned_unreachable else logging.WARNING
        log.log(level, "MQTT: broker %s unreachable; retrying, results wait in the outbox", self.broker)
        self._warned_unreachable = True

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._acked.append(mid)  # settled by the delivery thread (paho holds its locks here)
        self._wake.set()


def _optional(path: os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)
