"""The [mqtt] and [metrics] sections of the configuration (validated by config.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ConfigError

TOPIC_FIELDS = ("station", "product")


@dataclass(frozen=True)
class MqttSettings:
    """One message per result to the line's broker; off while `host` is empty."""

    host: str = ""
    port: int = 1883  # 8883 is the usual TLS port
    # Per-result topic; {station} and {product} are filled in. A [[watch]] folder may
    # set its own `mqtt_topic` (same placeholders).
    topic: str = "inspectd/{station}/result"
    qos: Literal[1, 2] = 1  # at least once (1) or exactly once (2) to the broker
    client_id: str = ""  # default: inspectd-<host name>
    username: str = ""
    password_file: Path | None = None  # the password, kept out of config.toml
    tls: bool = False
    ca_file: Path | None = None  # CA bundle (default: the system's)
    cert_file: Path | None = None  # client certificate, with key_file
    key_file: Path | None = None
    keepalive: int = 30

    def __post_init__(self) -> None:
        _require(1 <= self.port <= 65535, "port", "must be in 1..65535")
        _require(self.keepalive >= 5, "keepalive", "must be >= 5 seconds")
        _require((self.cert_file is None) == (self.key_file is None), "cert_file",
                 "and key_file go together (a client certificate needs its key)")
        topic_for(self.topic, station="s", product="p", key="topic")

    @property
    def enabled(self) -> bool:
        return bool(self.host)


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus endpoint; off while `port` is 0."""

    port: int = 0
    address: str = "127.0.0.1"  # localhost only unless the plant's monitoring needs more

    def __post_init__(self) -> None:
        _require(0 <= self.port <= 65535, "port", "must be in 0..65535 (0: no endpoint)")
        _require(bool(self.address), "address", "must not be empty")


def topic_for(template: str, *, station: str, product: str, key: str = "mqtt.topic") -> str:
    """The topic for one station; ConfigError (naming `key`) when the template or the
    result is not a valid MQTT topic name."""
    try:
        topic = template.format(station=station, product=product)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"'{key}' may only use the placeholders "
                          f"{', '.join('{' + f + '}' for f in TOPIC_FIELDS)} ({exc})") from None
    if not topic or "+" in topic or "#" in topic or "\0" in topic or len(topic.encode()) > 65535:
        raise ConfigError(f"'{key}' gives {topic!r}, not a valid MQTT topic (no '+', '#' or NUL, not empty)")
    return topic


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"'{key}' {message}")
