"""Alerts out: the outbox drained to a real HTTP receiver on loopback that fails some requests.

In-process: the delivery thread against a receiver answering 500, then 429, then 200; every
alert arrives, signed; HubSpot gets its batch-update shape; a 4xx that retrying cannot fix is
kept as dead. Over the real server (`bentoml serve`): events in, alerts out; then alerts queued
while the receiver is down survive a `kill -9` of the service and are delivered after a restart.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.alert_receiver import Receiver
from benchmarks.bench_model import EXAMPLE_ATTRIBUTES
from benchmarks.local_server import start_server
from benchmarks.service import Server as KillableServer
from model.leadstore import open_lead_store
from model.scoring import GridOut, ReasonOut, ScoreOut
from serving.alerts import (
    ALERT_ID_HEADER,
    HUBSPOT_BATCH_UPDATE,
    MAX_IN_FLIGHT,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertConfig,
    AlertDelivery,
    verify_signature,
)

SECRET = b"test-alert-secret-0123456789"
TOKEN = "pat-test-hubspot-token"


def flaky(key: str, n: int) -> int:
    """500, then 429, then 200."""
    return (500, 429)[n] if n < 2 else 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(flaky)
    yield server
    server.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def a_score(lead_id: str, score: int, tier: str) -> ScoreOut:
    reason = ReasonOut(driver="demo_request", feature="demo_request_count_30d", value=1.0, label="asked for a demo", contribution=12.0)
    return ScoreOut(
        lead_id=lead_id, as_of=datetime.now(UTC), probability=score / 100, score=score, tier=tier,  # type: ignore[arg-type]
        mql=True, reasons={"up": [reason], "down": []}, point_grid=GridOut(points=0, mql=False, rules_fired=[]),
        warnings=[], model_version="v7",
    )  # fmt: skip


def config(url: str, **changes: Any) -> AlertConfig:
    values: dict[str, Any] = {
        "webhooks": (f"{url}/hook",), "secret": SECRET, "score_jump": 10, "retry_s": 0.02, "retry_max_s": 0.2,
        "hubspot_token": TOKEN, "hubspot_api_url": url, "hubspot_id_property": "email",
    }  # fmt: skip
    values.update(changes)
    return AlertConfig(**values)


def test_every_alert_arrives_signed_through_failures(receiver: Receiver, tmp_path: Path) -> None:
    store = open_lead_store(f"sqlite:///{tmp_path / 'leads.db'}")
    alerts = config(receiver.url)
    delivery = AlertDelivery(store, alerts)
    delivery.start()
    try:
        queued = [store.record_score(f"lead-{i}@acme.com", a_score(f"lead-{i}@acme.com", 95, "hot"), alerts.policy()) for i in range(12)]
        delivery.wake()
        assert wait_for(lambda: store.outbox_counts().pending == 0), store.outbox_counts()
    finally:
        delivery.stop()

    hooks = receiver.delivered("/hook")
    assert sorted(r.headers[ALERT_ID_HEADER] for r in hooks) == sorted(a.alert_id for a in queued if a is not None)
    for r in hooks:
        assert verify_signature(SECRET, r.headers[TIMESTAMP_HEADER], r.headers[SIGNATURE_HEADER], r.body)
        assert not verify_signature(b"another-secret-0123456789", r.headers[TIMESTAMP_HEADER], r.headers[SIGNATURE_HEADER], r.body)
        assert not verify_signature(SECRET, r.headers[TIMESTAMP_HEADER], r.headers[SIGNATURE_HEADER], r.body + b" ")
        payload = json.loads(r.body)
        assert payload["kinds"] == ["entered_hot"] and payload["tier"] == "hot" and payload["top_reason"] == "asked for a demo"
    # Each alert was refused twice (500, then 429) before it got through.
    assert all(receiver.seen[r.headers[ALERT_ID_HEADER]] == 3 for r in hooks)
    written_back = [json.loads(r.body) for r in receiver.delivered(HUBSPOT_BATCH_UPDATE)]
    inputs = [entry for batch in written_back for entry in batch["inputs"]]
    assert sorted(e["id"] for e in inputs) == sorted(f"lead-{i}@acme.com" for i in range(12))
    assert all(e["idProperty"] == "email" and e["properties"]["leadscore_tier"] == "hot" for e in inputs)
    assert all(e["properties"]["leadscore_score"] == "95" for e in inputs)
    hubspot_headers = [r.headers for r in receiver.received if r.path == HUBSPOT_BATCH_UPDATE]
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for h in hubspot_headers)
    assert store.outbox_counts().delivered == 24


def test_a_slow_receiver_delays_its_own_answers_not_the_alerts_behind_them(tmp_path: Path) -> None:
    slow = Receiver()
    slow.delay_s = 0.4  # one delivery at a time, the alerts below would take MAX_IN_FLIGHT * 0.4 s
    store = open_lead_store(f"sqlite:///{tmp_path / 'leads.db'}")
    alerts = config(slow.url, hubspot_token=None)
    delivery = AlertDelivery(store, alerts)
    delivery.start()
    try:
        started = time.monotonic()
        with store.session() as s:
            s.record_scores({f"L-{i}": a_score(f"L-{i}", 95, "hot") for i in range(MAX_IN_FLIGHT)}, alerts.policy())
        delivery.wake()
        assert wait_for(lambda: store.outbox_counts().delivered == MAX_IN_FLIGHT), store.outbox_counts()
        took = time.monotonic() - started
    finally:
        delivery.stop()
        slow.close()

    assert took < MAX_IN_FLIGHT * 0.4 / 2, took
    assert len(slow.delivered()) == MAX_IN_FLIGHT


def test_a_refusal_that_retrying_cannot_fix_is_kept_as_dead(tmp_path: Path) -> None:
    gone = Receiver(lambda key, n: 410)
    store = open_lead_store(f"sqlite:///{tmp_path / 'leads.db'}")
    alerts = config(gone.url, hubspot_token=None)
    delivery = AlertDelivery(store, alerts)
    try:
        store.record_score("L-1", a_score("L-1", 95, "hot"), alerts.policy())
        delivery.drain_once()
    finally:
        gone.close()
    assert store.outbox_counts().dead == 1 and len(gone.received) == 1


def test_an_unreachable_receiver_is_retried_with_growing_waits(tmp_path: Path) -> None:
    store = open_lead_store(f"sqlite:///{tmp_path / 'leads.db'}")
    alerts = config("http://127.0.0.1:9", hubspot_token=None, retry_s=10.0, retry_max_s=25.0)  # the discard port: refused
    delivery = AlertDelivery(store, alerts)
    store.record_score("L-1", a_score("L-1", 95, "hot"), alerts.policy())
    waits = []
    for _ in range(3):
        now = datetime.now(UTC)
        [item] = store.claim_due(10, timedelta(seconds=1), now + timedelta(hours=1))
        delivery._settle([item], delivery._send_webhook(item))
        due = store.next_due()
        assert due is not None
        waits.append((due - now).total_seconds())
    assert 10 <= waits[0] <= 12.5 and 20 <= waits[1] <= 25.5 and 24 <= waits[2] <= 25.5, waits
    assert store.outbox_counts().pending == 1


# -- the real server: events in, alerts out, and a kill -9 ---------------------------------------


def events_making_hot(lead_ids: list[str], prefix: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    batch = []
    for lead_id in lead_ids:
        batch.append({"type": "identify", "messageId": f"{prefix}-id-{lead_id}", "userId": lead_id,
                      "traits": {**EXAMPLE_ATTRIBUTES, "createdAt": (now - timedelta(days=3)).isoformat()},
                      "timestamp": (now - timedelta(days=3)).isoformat()})  # fmt: skip
        batch.append({"type": "track", "messageId": f"{prefix}-ev-{lead_id}", "userId": lead_id, "event": "demo_request",
                      "timestamp": (now - timedelta(minutes=1)).isoformat()})  # fmt: skip
    return {"batch": batch}


@pytest.mark.slow
def test_alerts_queued_before_a_kill_9_are_delivered_after_the_restart(
    trained_bundle: Path, tmp_path: Path, service_env: dict[str, str], service_keys
) -> None:
    receiver = Receiver(flaky)
    env = {
        **os.environ, **service_env,
        "LEADSCORE_BUNDLE": str(trained_bundle),
        "LEADSCORE_STATE_DIR": str(tmp_path / "state"),
        "LEADSCORE_LEAD_STORE": f"sqlite:///{tmp_path / 'state' / 'leads.db'}",
        "LEADSCORE_ALERT_WEBHOOKS": f"{receiver.url}/hook",
        "LEADSCORE_ALERT_SECRET": SECRET.decode(),
        "LEADSCORE_ALERT_RETRY_SECONDS": "0.05",
        "LEADSCORE_ALERT_RETRY_MAX_SECONDS": "0.5",
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    headers = service_keys.header("score")
    log = tmp_path / "server.log"
    process, url = start_server(env, log, ready_timeout_s=90, fail=pytest.fail)
    server = KillableServer(env, int(url.rsplit(":", 1)[1]), log)
    server.process = process
    try:
        first = [f"first-{i}@acme.com" for i in range(10)]
        answer = httpx.post(f"{url}/events", json=events_making_hot(first, "a"), headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text
        assert answer.json()["alerts_queued"] == 10, answer.json()
        assert wait_for(lambda: len(receiver.delivered()) == 10), receiver.received[-3:]

        receiver.down = True  # every delivery fails now: the alerts stay in the outbox
        second = [f"second-{i}@acme.com" for i in range(10)]
        answer = httpx.post(f"{url}/events", json=events_making_hot(second, "b"), headers=headers, timeout=30)
        assert answer.status_code == 202 and answer.json()["alerts_queued"] == 10, answer.text
        time.sleep(0.5)
        server.kill()
        receiver.down = False
        server.start()
        assert wait_for(lambda: len(receiver.delivered()) == 20, timeout_s=60), (len(receiver.delivered()), log.read_text()[-2000:])
    finally:
        server.stop()
        receiver.close()

    delivered = receiver.delivered()
    leads = [json.loads(r.body)["lead_id"] for r in delivered]
    assert sorted(set(leads)) == sorted(first + second)
    assert all(verify_signature(SECRET, r.headers[TIMESTAMP_HEADER], r.headers[SIGNATURE_HEADER], r.body, now=time.time())
               for r in delivered)  # fmt: skip
