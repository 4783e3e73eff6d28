"""The Prometheus endpoint, scraped over HTTP as the plant's monitoring does."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspectd.errors import ConfigError
from inspectd.plant.monitoring import DaemonMetrics
from inspectd.plant.settings import MetricsSettings
from servers import free_port


def scrape(port: int, address: str = "127.0.0.1") -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture
def served() -> tuple[DaemonMetrics, int]:
    metrics = DaemonMetrics()
    port = free_port()
    metrics.serve(MetricsSettings(port=port))
    yield metrics, port
    metrics.close()


def test_every_metric_the_plant_watches(served) -> None:
    metrics, port = served
    metrics.scored("part", "line1-cam1", "OK", 0.4)
    metrics.scored("part", "line1-cam1", "NG", 1.5)
    metrics.scored("part", "line1-cam1", "NG", 0.2)
    metrics.scored("gear", "line2-cam1", "ERROR", None)
    metrics.queue_depth.set(7)
    metrics.pause_started("disk_full")
    metrics.model_in_use("part", "v0002")
    metrics.model_in_use("part", "v0003")
    depth = [5]
    metrics.watch_outbox(lambda: depth[0], lambda: False)
    samples = scrape(port)
    assert samples[("inspectd_images_total", (("product", "part"), ("station", "line1-cam1"), ("verdict", "NG")))] == 2
    assert samples[("inspectd_images_total", (("product", "gear"), ("station", "line2-cam1"), ("verdict", "ERROR")))] == 1
    latency = (("product", "part"), ("station", "line1-cam1"))
    assert samples[("inspectd_latency_seconds_count", latency)] == 3
    assert samples[("inspectd_latency_seconds_bucket", tuple(sorted(dict(latency, le="0.5").items())))] == 2
    assert samples[("inspectd_queue_depth", ())] == 7
    assert samples[("inspectd_pauses_total", (("reason", "disk_full"),))] == 1
    assert samples[("inspectd_paused", (("reason", "disk_full"),))] == 1
    assert samples[("inspectd_active_model_version", (("product", "part"), ("version", "v0003")))] == 3
    assert ("inspectd_active_model_version", (("product", "part"), ("version", "v0002"))) not in samples
    assert samples[("inspectd_mqtt_outbox_depth", ())] == 5 and samples[("inspectd_mqtt_connected", ())] == 0
    depth[0] = 0
    metrics.pause_ended("disk_full")
    samples = scrape(port)
    assert samples[("inspectd_mqtt_outbox_depth", ())] == 0 and samples[("inspectd_paused", (("reason", "disk_full"),))] == 0


def test_bound_to_localhost_by_default(served) -> None:
    metrics, _ = served
    assert MetricsSettings().address == "127.0.0.1"
    assert metrics._server.server_address[0] == "127.0.0.1"  # the listening socket, not only the setting


def test_a_port_in_use_is_one_clear_error(served) -> None:
    _, port = served
    with pytest.raises(ConfigError, match=f"'metrics.port': cannot listen on 127.0.0.1:{port}"):
        DaemonMetrics().serve(MetricsSettings(port=port))


def test_no_port_no_endpoint() -> None:
    metrics = DaemonMetrics()
    metrics.serve(MetricsSettings())
    assert metrics._server is None
