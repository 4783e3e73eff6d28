"""The daemon's Prometheus endpoint ([metrics] port; localhost only by default).

    inspectd_images_total{product,station,verdict}     images scored
    inspectd_latency_seconds{product,station}          file taken in -> result row committed
    inspectd_result_write_seconds                      writing one result row (its commit)
    inspectd_queue_depth                               this daemon's items waiting or being scored
    inspectd_settling_files                            files seen, waiting to stop changing
    inspectd_offline_queue_depth                       scored while the database server was away, not yet written
    inspectd_pauses_total{reason} / inspectd_paused{reason}   pauses (disk full, database ...)
    inspectd_active_model_version{product,version}     the version in use (value: its number)
    inspectd_mqtt_outbox_depth                         messages waiting for the broker
    inspectd_mqtt_connected                            1 while the broker is connected
    inspectd_mqtt_delivery_seconds                     row committed -> broker's acknowledgement
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..errors import ConfigError
from .settings import MetricsSettings

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
WRITE_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
                 5.0)
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0)
_VERSION_NUMBER = re.compile(r"\d+")


class DaemonMetrics:
    """The metrics of one daemon, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.images = Counter("inspectd_images", "Images scored, by product, station and verdict",
                              ["product", "station", "verdict"], registry=r)
        self.latency = Histogram("inspectd_latency_seconds", "From a file's intake to its result row committed",
                                 ["product", "station"], buckets=LATENCY_BUCKETS, registry=r)
        self.result_write = Histogram("inspectd_result_write_seconds", "Writing one result row, its commit included",
                                      buckets=WRITE_BUCKETS, registry=r)
        self.queue_depth = Gauge("inspectd_queue_depth", "Items of this daemon's stations waiting or being scored",
                                 registry=r)
        self.settling = Gauge("inspectd_settling_files", "Files seen and waiting to stop changing", registry=r)
        self.offline_queue_depth = Gauge("inspectd_offline_queue_depth",
                                         "Entries of the local queue not yet written to the database", registry=r)
        self.pauses = Counter("inspectd_pauses", "Pauses of scoring, by reason", ["reason"], registry=r)
        self.paused = Gauge("inspectd_paused", "1 while scoring is paused for this reason", ["reason"], registry=r)
        self.model_version = Gauge("inspectd_active_model_version",
                                   "The model version in use per product (value: the version's number)",
                                   ["product", "version"], registry=r)
        self.outbox_depth = Gauge("inspectd_mqtt_outbox_depth", "MQTT messages waiting for the broker", registry=r)
        self.mqtt_connected = Gauge("inspectd_mqtt_connected", "1 while the MQTT broker is connected", registry=r)
        self.mqtt_delivery = Histogram("inspectd_mqtt_delivery_seconds",
                                       "From a result row's commit to the broker's acknowledgement of its message",
                                       buckets=DELIVERY_BUCKETS, registry=r)
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None

    # -- what the daemon reports ------------------------------------------------------
    def scored(self, product: str, station: str, verdict: str, latency_s: float | None) -> None:
        self.images.labels(product, station, verdict).inc()
        if latency_s is not None and latency_s >= 0:
            self.latency.labels(product, station).observe(latency_s)

    def model_in_use(self, product: str, version: str) -> None:
        """The product now scores with `version` (the previous version's series goes)."""
        with self._lock:
            previous = self._versions.get(product)
            if previous == version:
                return
            if previous is not None:
                self.model_version.remove(product, previous)
            match = _VERSION_NUMBER.search(version)
            self.model_version.labels(product, version).set(int(match.group()) if match else 0)
            self._versions[product] = version

    def pause_started(self, reason: str) -> None:
        self.pauses.labels(reason).inc()
        self.paused.labels(reason).set(1)

    def pause_ended(self, reason: str) -> None:
        self.paused.labels(reason).set(0)

    def watch_outbox(self, depth: Callable[[], int], connected: Callable[[], bool]) -> None:
        """Read at each scrape (the outbox is thread-safe)."""
        self.outbox_depth.set_function(depth)
        self.mqtt_connected.set_function(lambda: 1.0 if connected() else 0.0)

    # -- the endpoint -----------------------------------------------------------------
    def serve(self, settings: MetricsSettings) -> None:
        """Start the HTTP endpoint (a thread of its own) when a port is configured."""
        if not settings.port:
            return
        try:
            self._server, _ = start_http_server(settings.port, addr=settings.address, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"'metrics.port': cannot listen on {settings.address}:{settings.port} "
                              f"({exc.strerror or exc})") from exc
        log.info("Prometheus metrics on http://%s:%d/metrics", settings.address, settings.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
