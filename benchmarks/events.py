"""`make bench-service`, events phase: `POST /events` into the lead store, alerts out, a kill -9.

Against the real `bentoml serve` on 127.0.0.1, its alerts pointed at a webhook receiver on
loopback (`benchmarks.alert_receiver`):

1. **ingest**: Segment batches of 100 messages (identify and track over 20 leads each) posted
   back to back by 4 clients; every touched lead is scored again from its stored history in
   the request: accepted events per second, and the batches' latency;
2. **event-to-alert latency**: batches of one new lead that turns hot (identify + a demo request)
   paced at 20/s; from sending the batch to the signed alert arriving at the receiver, p50/p99;
3. **kill -9 mid-stream**: batches of 2 new hot leads at 20/s; SIGKILL to the server halfway, an
   immediate restart; the client resends a batch until it is answered 202 (same messageIds, as
   Segment retries); alerts lost = hot leads of answered batches whose alert never arrived.

Run alone: `python -m benchmarks.events [--seconds 20]` (trains its own bundle).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.alert_receiver import Receiver
from benchmarks.bench_model import EXAMPLE_ATTRIBUTES, PROJECT_ROOT, train_bench_bundle
from benchmarks.service import Server, free_port
from features.vocabulary import INTERACTION_TYPES
from serving.alerts import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "events.json"
BATCH_MESSAGES = 100
LEADS_PER_BATCH = 20
INGEST_CLIENTS = 4
PACE_PER_S = 20.0
ATTEMPT_TIMEOUT_S = 5.0
DELIVERY_WAIT_S = 60.0
COLD_ATTRIBUTES = {**EXAMPLE_ATTRIBUTES, "email": "someone@gmail.com", "seniority": "individual_contributor",
                   "source": "cold_outbound", "company_size": "1-9", "employee_count": 3, "job_role": "other"}  # fmt: skip


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def hot_lead_messages(lead_id: str, now: datetime) -> list[dict[str, Any]]:
    """An identify that makes a new lead hot (the example attributes) and a demo request."""
    created = now - timedelta(days=3)
    return [
        {"type": "identify", "messageId": f"id-{lead_id}", "userId": lead_id,
         "traits": {**EXAMPLE_ATTRIBUTES, "createdAt": _iso(created)}, "timestamp": _iso(created)},
        {"type": "track", "messageId": f"demo-{lead_id}", "userId": lead_id, "event": "demo_request",
         "timestamp": _iso(now - timedelta(seconds=30))},
    ]  # fmt: skip


def ingest_batch(batch_no: int, rng: np.random.Generator, now: datetime) -> list[dict[str, Any]]:
    """`BATCH_MESSAGES` messages over `LEADS_PER_BATCH` leads: an identify each, then tracks."""
    messages: list[dict[str, Any]] = []
    leads = [f"ingest-{batch_no}-{j}" for j in range(LEADS_PER_BATCH)]
    for lead in leads:
        created = now - timedelta(days=int(rng.integers(1, 60)))
        messages.append({"type": "identify", "messageId": f"i-{lead}", "userId": lead,
                         "traits": {**COLD_ATTRIBUTES, "createdAt": _iso(created)}, "timestamp": _iso(created)})  # fmt: skip
    for k in range(BATCH_MESSAGES - len(leads)):
        lead = leads[k % len(leads)]
        messages.append({"type": "track", "messageId": f"t-{batch_no}-{k}", "userId": lead,
                         "event": str(rng.choice(INTERACTION_TYPES)), "properties": {"channel": "web"},
                         "timestamp": _iso(now - timedelta(minutes=int(rng.integers(1, 20_000))))})  # fmt: skip
    return messages


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    array = np.array(values)
    return {"p50_ms": round(float(np.percentile(array, 50)), 1), "p99_ms": round(float(np.percentile(array, 99)), 1),
            "max_ms": round(float(array.max()), 1)}  # fmt: skip


async def ingest_run(url: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    counter = iter(range(10**9))
    accepted = rescored = refused = 0
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        started = time.monotonic()
        deadline = started + seconds

        async def one_client() -> None:
            nonlocal accepted, rescored, refused
            while time.monotonic() < deadline:
                body = {"batch": ingest_batch(next(counter), rng, now)}
                sent = time.monotonic()
                response = await client.post("/events", json=body)
                latencies.append(1000 * (time.monotonic() - sent))
                statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
                if response.status_code == 202:
                    answer = response.json()
                    accepted += answer["accepted"]
                    rescored += answer["leads_rescored"]
                    refused += answer["refused"]

        await asyncio.gather(*(one_client() for _ in range(INGEST_CLIENTS)))
        elapsed = time.monotonic() - started
    return {
        "seconds": round(elapsed, 1), "clients": INGEST_CLIENTS, "messages_per_batch": BATCH_MESSAGES,
        "leads_per_batch": LEADS_PER_BATCH, "events_accepted": accepted, "events_refused": refused,
        "leads_rescored": rescored, "events_per_s": round(accepted / elapsed, 1), "statuses": statuses,
        "batch_latency": _percentiles(latencies), "target_events_per_s": 1000,
    }  # fmt: skip


async def latency_run(url: str, headers: dict[str, str], receiver: Receiver, n_leads: int) -> dict[str, Any]:
    sent_at: dict[str, float] = {}
    failed = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        start = time.monotonic() + 0.2

        async def one(i: int) -> None:
            nonlocal failed
            await asyncio.sleep(max(0.0, start + i / PACE_PER_S - time.monotonic()))
            lead = f"latency-{i}"
            sent_at[lead] = time.time()
            response = await client.post("/events", json={"batch": hot_lead_messages(lead, datetime.now(UTC))})
            failed += response.status_code != 202 or response.json()["alerts_queued"] != 1

        await asyncio.gather(*(one(i) for i in range(n_leads)))
    arrived = await _wait_for_alerts(receiver, set(sent_at), DELIVERY_WAIT_S)
    latencies = [1000 * (arrived[lead] - sent_at[lead]) for lead in sent_at if lead in arrived]
    return {"leads": n_leads, "paced_per_s": PACE_PER_S, "batches_not_queuing_one_alert": failed,
            "alerts_arrived": len(latencies), **_percentiles(latencies), "target_p50_ms": 50}  # fmt: skip


async def _wait_for_alerts(receiver: Receiver, leads: set[str], timeout_s: float) -> dict[str, float]:
    """Lead -> arrival time of its first alert, waiting until every lead has one or `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        arrived: dict[str, float] = {}
        for record in receiver.delivered():
            lead = json.loads(record.body)["lead_id"]
            if lead in leads and lead not in arrived:
                arrived[lead] = record.at
        if len(arrived) == len(leads) or time.monotonic() > deadline:
            return arrived
        await asyncio.sleep(0.2)


async def kill_run(server: Server, headers: dict[str, str], receiver: Receiver, seconds: float, secret: bytes) -> dict[str, Any]:
    expected: set[str] = set()
    attempts_failed = 0
    timing: dict[str, float] = {}
    n_batches = int(seconds * PACE_PER_S)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=ATTEMPT_TIMEOUT_S) as client:
        start = time.monotonic() + 0.2

        async def one(i: int) -> None:
            nonlocal attempts_failed
            await asyncio.sleep(max(0.0, start + i / PACE_PER_S - time.monotonic()))
            leads = [f"kill-{i}-{j}" for j in range(2)]
            now = datetime.now(UTC)
            body = {"batch": [m for lead in leads for m in hot_lead_messages(lead, now)]}
            while True:  # a pipeline resends until it is answered
                try:
                    if (await client.post("/events", json=body)).status_code == 202:
                        expected.update(leads)
                        return
                except httpx.HTTPError:
                    pass
                attempts_failed += 1
                await asyncio.sleep(0.5)

        async def crash_halfway() -> None:
            await asyncio.sleep(max(0.0, start + seconds / 2 - time.monotonic()))
            timing["killed_s"] = time.monotonic() - start
            await asyncio.to_thread(server.kill)
            timing["ready_s"] = timing["killed_s"] + await asyncio.to_thread(server.start)

        await asyncio.gather(*(one(i) for i in range(n_batches)), crash_halfway())
    arrived = await _wait_for_alerts(receiver, expected, DELIVERY_WAIT_S)
    records = [r for r in receiver.delivered() if json.loads(r.body)["lead_id"] in expected]
    signed = sum(verify_signature(secret, r.headers.get(TIMESTAMP_HEADER), r.headers.get(SIGNATURE_HEADER), r.body, now=r.at)
                 for r in records)  # fmt: skip
    return {
        "batches": n_batches, "hot_leads_answered_202": len(expected), "killed_at_s": round(timing["killed_s"], 1),
        "ready_again_at_s": round(timing["ready_s"], 1), "attempts_failed_and_resent": attempts_failed,
        "alerts_arrived": len(arrived), "alerts_lost": len(expected) - len(arrived),
        "deliveries_beyond_one_per_alert": len(records) - len({r.headers.get("X-Leadscore-Alert-Id") for r in records}),
        "signatures_valid": signed == len(records), "target_alerts_lost": 0,
    }  # fmt: skip


def run_events(workdir: Path, bundle: Path, seconds: float) -> dict[str, Any]:
    """The three runs against one server (restarted by the kill run); their figures."""
    receiver = Receiver()
    secret = secrets.token_urlsafe(24)
    score_key = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "LEADSCORE_BUNDLE": str(bundle),
        "LEADSCORE_API_KEYS": f"{score_key}:score",
        "LEADSCORE_STATE_DIR": str(workdir / "events-state"),
        "LEADSCORE_LEAD_STORE": f"sqlite:///{workdir / 'events-state' / 'leads.db'}",
        "LEADSCORE_ALERT_WEBHOOKS": f"{receiver.url}/hook",
        "LEADSCORE_ALERT_SECRET": secret,
        "LEADSCORE_ALERT_RETRY_SECONDS": "0.1",
        "LEADSCORE_ALERT_RETRY_MAX_SECONDS": "2",
        "LEADSCORE_POLL_SECONDS": "0",
        "BENTOML_HOME": str(workdir / "events-bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LEADSCORE_SCORE_LOG", None)
    headers = {"Authorization": f"Bearer {score_key}"}
    server = Server(env, free_port(), workdir / "events-server.log")
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        server.start()
        print(f"events: ingest with rescoring, {INGEST_CLIENTS} clients for {seconds:g} s ...", flush=True)
        out["ingest"] = asyncio.run(ingest_run(server.url, headers, seconds))
        print(f"  {out['ingest']}", flush=True)
        print("events: event-to-alert latency ...", flush=True)
        out["event_to_alert"] = asyncio.run(latency_run(server.url, headers, receiver, int(PACE_PER_S * seconds / 2)))
        print(f"  {out['event_to_alert']}", flush=True)
        print("events: kill -9 mid-stream ...", flush=True)
        out["kill_9"] = asyncio.run(kill_run(server, headers, receiver, seconds, secret.encode()))
        print(f"  {out['kill_9']}", flush=True)
    finally:
        server.stop()
        receiver.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the ingest and kill runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="leadscore-bench-events-"))
    bundle = train_bench_bundle(workdir, 3_000, seed=11)
    results = run_events(workdir, bundle, args.seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
