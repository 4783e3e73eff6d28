"""The MQTT outbox against a real Mosquitto broker on a loopback port: order, every
field, nothing sent before its row is committed, a broker outage and a daemon restart
that lose nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from inspectd.config import parse_config
from inspectd.errors import ConfigError
from inspectd.plant.mqtt import Verdict, VerdictPublisher
from inspectd.plant.outbox import Outbox
from inspectd.plant.settings import MqttSettings
from servers import MosquittoBroker, Subscriber

TOPIC = "plant/line1/cam1/result"


@pytest.fixture
def subscriber(request: pytest.FixtureRequest) -> Iterator[callable]:
    made: list[Subscriber] = []

    def make(broker: MosquittoBroker) -> Subscriber:
        made.append(Subscriber(broker, f"controller-{request.node.name}"[:60]))
        return made[-1]

    yield make
    for sub in made:
        sub.close()


def verdict(item_id: int) -> Verdict:
    return Verdict(item_id=item_id, path=f"/srv/drop/cam1/{item_id}.png", product="part", station="line1-cam1",
                   verdict="NG" if item_id % 3 == 0 else "OK", score=1.5, normalized_score=0.75, threshold=2.0,
                   model_version="v0002", heatmap_path=f"/var/heat/{item_id}.png", image_path=None, error=None,
                   scored_at=datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc))


def commit(outbox: Outbox, publisher: VerdictPublisher | None, item_id: int) -> None:
    """What the daemon does around a result row's commit."""
    message_id = outbox.prepare(item_id, TOPIC, verdict(item_id).payload())
    outbox.release(message_id)
    if publisher is not None:
        publisher.notify()


def publisher_for(broker: MosquittoBroker, outbox: Outbox) -> VerdictPublisher:
    publisher = VerdictPublisher(MqttSettings(host="127.0.0.1", port=broker.port), outbox)
    publisher.start()
    return publisher


def first_seen_order(messages: list[dict]) -> list[int]:
    """Item ids in arrival order, repeats (QoS 1's at-least-once) dropped by item id."""
    seen: dict[int, None] = {}
    for message in messages:
        seen.setdefault(message["item_id"], None)
    return list(seen)


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_one_message_per_result_in_order_with_every_field(mosquitto_broker: MosquittoBroker, subscriber,
                                                         tmp_path: Path) -> None:
    controller = subscriber(mosquitto_broker)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    publisher = publisher_for(mosquitto_broker, outbox)
    try:
        for item_id in range(1, 51):
            commit(outbox, publisher, item_id)
        messages = controller.wait_for(set(range(1, 51)))
        wait_until(lambda: outbox.depth() == 0)
    finally:
        publisher.stop()
    assert [m["item_id"] for m in messages] == list(range(1, 51))
    first = messages[2]
    assert first["_topic"] == TOPIC
    assert {k: first[k] for k in ("path", "product", "station", "verdict", "score", "normalized_score",
                                  "model_version", "heatmap_path", "time")} == {
        "path": "/srv/drop/cam1/3.png", "product": "part", "station": "line1-cam1", "verdict": "NG", "score": 1.5,
        "normalized_score": 0.75, "model_version": "v0002", "heatmap_path": "/var/heat/3.png",
        "time": "2026-05-01T08:00:00+00:00"}


def test_nothing_goes_before_its_row_is_committed_and_a_crash_is_recovered(mosquitto_broker: MosquittoBroker,
                                                                          subscriber, tmp_path: Path) -> None:
    controller = subscriber(mosquitto_broker)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    committed_id = outbox.prepare(1, TOPIC, verdict(1).payload())
    outbox.prepare(2, TOPIC, verdict(2).payload())  # the daemon dies here: row 2 committed, message not released
    outbox.prepare(3, TOPIC, verdict(3).payload())  # row 3 never committed
    outbox.release(committed_id)
    publisher = publisher_for(mosquitto_broker, outbox)
    try:
        controller.wait_for({1})
        time.sleep(0.5)
        assert [m["item_id"] for m in controller.messages] == [1]
    finally:
        publisher.stop()
    outbox.close()
    restarted = Outbox(tmp_path / "outbox.sqlite3")
    assert restarted.recover(lambda item_ids: {i for i in item_ids if i == 2}) == (1, 1)
    publisher = publisher_for(mosquitto_broker, restarted)
    try:
        controller.wait_for({2})
        wait_until(lambda: restarted.depth() == 0)
        time.sleep(0.3)
    finally:
        publisher.stop()
    assert [m["item_id"] for m in controller.messages] == [1, 2]


def test_a_broker_outage_mid_stream_loses_nothing_and_resumes_in_order(make_broker, subscriber,
                                                                      tmp_path: Path) -> None:
    broker = make_broker()
    controller = subscriber(broker)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    publisher = publisher_for(broker, outbox)
    try:
        for item_id in range(1, 41):
            commit(outbox, publisher, item_id)
            time.sleep(0.005)
        controller.wait_for(set(range(1, 21)))
        broker.stop()  # the outage: results keep coming
        wait_until(lambda: not publisher.connected)
        for item_id in range(41, 121):
            commit(outbox, publisher, item_id)
            time.sleep(0.005)
        assert outbox.depth() >= 80
        time.sleep(1.5)
        broker.start()
        for item_id in range(121, 141):
            commit(outbox, publisher, item_id)
        messages = controller.wait_for(set(range(1, 141)), timeout=60)
        wait_until(lambda: outbox.depth() == 0, timeout=30)
    finally:
        publisher.stop()
    assert first_seen_order(messages) == list(range(1, 141))
    repeats = len(messages) - 140
    assert repeats <= 100, f"{repeats} repeats: more than the unacknowledged window"


def test_messages_waiting_at_shutdown_go_at_the_next_start(make_broker, subscriber, tmp_path: Path) -> None:
    broker = make_broker()
    controller = subscriber(broker)
    broker.stop()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    publisher = publisher_for(broker, outbox)
    for item_id in range(1, 11):
        commit(outbox, publisher, item_id)
    publisher.stop(drain_seconds=0.2)
    outbox.close()
    assert Outbox(tmp_path / "outbox.sqlite3").depth() == 10
    broker.start()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    publisher = publisher_for(broker, outbox)
    try:
        messages = controller.wait_for(set(range(1, 11)))
        wait_until(lambda: outbox.depth() == 0)
    finally:
        publisher.stop()
    assert first_seen_order(messages) == list(range(1, 11))


def test_topics_are_checked_when_the_configuration_is_read() -> None:
    config = parse_config({"mqtt": {"host": "broker", "topic": "plant/{product}/{station}"},
                           "watch": [{"path": "/d1", "product": "part", "station": "line1-cam1"},
                                     {"path": "/d2", "product": "part", "station": "cam2", "mqtt_topic": "x/cam2"}]})
    assert [config.mqtt_topic(folder) for folder in config.watch] == ["plant/part/line1-cam1", "x/cam2"]
    with pytest.raises(ConfigError, match="'mqtt.topic' gives 'inspectd/a#b/result'"):
        parse_config({"watch": [{"path": "/d", "product": "part", "station": "a#b"}]})
    with pytest.raises(ConfigError, match="'mqtt.topic' may only use the placeholders"):
        parse_config({"mqtt": {"topic": "plant/{line}"}})
    with pytest.raises(ConfigError, match="'mqtt.qos' must be one of 1, 2"):
        parse_config({"mqtt": {"qos": 0}})
