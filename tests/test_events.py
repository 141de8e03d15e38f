"""`POST /events`, `GET /leads/{lead_id}/score` and `POST /score` with a `lead_id`, on the ASGI app.

The parity test: simulated leads sent as Segment messages (shuffled, so that late events arrive
after later ones) and scored from the store equal the same leads scored whole by `POST /score`,
and the training path's features (`snapshot_features`) at the same `as_of`.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.bench_model import EXAMPLE_ATTRIBUTES
from features.engine import snapshot_features
from leadscore.cli import app as cli
from model.bundle import ScoringModel
from model.leadstore import AlertPolicy, open_lead_store, stored_lead_in
from model.scoring import rounded_probability, score_lead_with_features

AS_OF = "2025-03-01T00:00:00Z"


@pytest.fixture(scope="module")
def store_url(lead_store_url) -> str:
    return lead_store_url("events")


@pytest.fixture(scope="module")
async def client(trained_bundle: Path, start_service, store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with start_service(trained_bundle, LEADSCORE_LEAD_STORE=store_url) as http:
        yield http


def iso(value: Any) -> str:
    return pd.Timestamp(value).isoformat()


def segment_messages(leads: pd.DataFrame, interactions: pd.DataFrame, attributes: list[str]) -> list[dict[str, Any]]:
    """Each lead as an identify (its attributes, createdAt) and a track per interaction."""
    messages = []
    for row in leads.itertuples(index=False):
        traits = {a: (None if pd.isna(getattr(row, a)) else getattr(row, a)) for a in attributes}
        traits = {k: (v.item() if hasattr(v, "item") else v) for k, v in traits.items()}
        messages.append({
            "type": "identify", "messageId": f"id-{row.lead_id}", "userId": row.lead_id,
            "traits": {**traits, "createdAt": iso(row.created_at)}, "timestamp": iso(row.created_at),
        })  # fmt: skip
    for i, row in enumerate(interactions.itertuples(index=False)):
        properties = {} if pd.isna(row.channel) else {"channel": row.channel}
        messages.append({
            "type": "track", "messageId": f"ev-{i}", "userId": row.lead_id, "event": row.type,
            "properties": properties, "timestamp": iso(row.occurred_at),
        })  # fmt: skip
    return messages


@pytest.mark.anyio
async def test_stored_history_scores_as_the_whole_lead_and_as_the_training_path(
    client: httpx.AsyncClient, trained_bundle: Path, store_url: str, tmp_path: Path
) -> None:
    from simulator.funnel import simulate, write_simulation
    from sources.folder import load_dataset
    from training.config import ProjectConfig

    write_simulation(simulate(60, seed=5), tmp_path / "sim")
    dataset = load_dataset(tmp_path / "sim", ProjectConfig().features)
    model = ScoringModel.load(trained_bundle)
    as_of = pd.Timestamp(AS_OF)
    leads = dataset.leads[dataset.leads["created_at"] <= as_of].reset_index(drop=True)
    interactions = dataset.interactions[dataset.interactions["lead_id"].isin(leads["lead_id"])]
    attributes = list(model.spec.attribute_columns())
    messages = segment_messages(leads, interactions, attributes)
    random.Random(3).shuffle(messages)  # late events: an interaction arrives after later ones

    for start in range(0, len(messages), 250):
        response = await client.post("/events", json={"batch": messages[start : start + 250]})
        assert response.status_code == 202, response.text
        assert response.json()["refused"] == 0, response.json()["refusals"][:3]

    snapshots = pd.DataFrame({"lead_id": leads["lead_id"], "as_of": as_of})
    rows = snapshot_features(leads, interactions, snapshots, model.spec)
    training_probability = rounded_probability(model.meta.calibration.apply(model.raw(model.encode(rows))))
    store = open_lead_store(store_url, create=False)
    assert len(leads) > 20 and len(interactions) > 100
    for i, lead_id in enumerate(leads["lead_id"]):
        stored = await client.get(f"/leads/{lead_id}/score", params={"as_of": AS_OF, "explain": "false"})
        assert stored.status_code == 200, stored.text
        whole_lead = {
            "lead_id": lead_id,
            "created_at": iso(leads["created_at"][i]),
            "attributes": messages_traits(leads, i, attributes),
            "interactions": [
                {"type": r.type, "occurred_at": iso(r.occurred_at), **({} if pd.isna(r.channel) else {"channel": r.channel})}
                for r in interactions[interactions["lead_id"] == lead_id].itertuples(index=False)
            ],
        }
        whole = await client.post("/score", json={"lead": whole_lead, "as_of": AS_OF, "explain": False})
        assert whole.status_code == 200, whole.text
        got, expected = stored.json(), whole.json()
        assert (got["probability"], got["score"], got["tier"]) == (expected["probability"], expected["score"], expected["tier"])
        assert got["probability"] == training_probability[i]
        # The feature values themselves, serving path from the store against the training path.
        _, features = score_lead_with_features(model, stored_lead_in(*store.history(lead_id)), as_of.to_pydatetime())
        for name in model.feature_names:
            value, trained = features[name], rows.row(i)[name]
            if isinstance(trained, float) and np.isnan(trained):
                assert isinstance(value, float) and np.isnan(value), (lead_id, name)
            else:
                assert value == trained or (value == "(unseen)" and trained not in model._codes[name]), (lead_id, name, value, trained)


def test_leads_rescored_together_score_as_each_alone(trained_bundle: Path, tmp_path: Path) -> None:
    from serving.events import rescore

    model = ScoringModel.load(trained_bundle)
    store = open_lead_store(f"sqlite:///{tmp_path / 'leads.db'}")
    now = datetime.now(UTC)
    cold = {**EXAMPLE_ATTRIBUTES, "seniority": "individual_contributor", "source": "cold_outbound", "company_size": "1-9"}
    with store.session() as s:
        s.upsert_lead("hot", dict(EXAMPLE_ATTRIBUTES), created_at=now - timedelta(days=3))
        s.add_interactions("hot", [("h1", "demo_request", now - timedelta(minutes=5), None)])
        s.upsert_lead("cold", cold, created_at=now - timedelta(days=40))
        s.add_interactions("cold", [("c1", "page_view", now - timedelta(days=2), {"channel": "web"}), ("c2", "webinar", now, None)])
        # Stored before a model that cannot read it was served: this model refuses it, its neighbours are scored.
        s.upsert_lead("unreadable", {"employee_count": "two hundred"}, created_at=now - timedelta(days=1))
    policy = AlertPolicy(targets=("webhook:http://a",))

    with store.session() as s:
        done = rescore(s, model, ["hot", "unreadable", "cold"], policy)

    assert list(done.rejected) == ["unreadable"] and "employee_count" in str(done.rejected["unreadable"])
    assert [out.lead_id for out, _ in done.scored] == ["hot", "cold"]
    by_id = {out.lead_id: (out, features) for out, features in done.scored}
    assert by_id["hot"][0].tier == "hot" and by_id["cold"][0].tier != "hot"
    assert done.alerts == 1 and store.outbox_counts().pending == 1
    for lead_id, (out, features) in by_id.items():
        alone, alone_features = score_lead_with_features(
            model, stored_lead_in(*store.history(lead_id)), out.as_of, with_reasons=out.reasons is not None, top_k=1
        )
        assert out == alone, lead_id
        assert features.keys() == alone_features.keys()
        assert all(features[k] == alone_features[k] or (features[k] != features[k] and alone_features[k] != alone_features[k])
                   for k in features), lead_id  # fmt: skip
    assert by_id["hot"][0].reasons is not None and by_id["cold"][0].reasons is None  # reasons for the alert only
    [item] = store.claim_due(10, timedelta(seconds=30))
    assert item.lead_id == "hot" and item.payload["top_reason"] == by_id["hot"][0].reasons["up"][0].label  # type: ignore[index]


def messages_traits(leads: pd.DataFrame, i: int, attributes: list[str]) -> dict[str, Any]:
    values = {a: leads[a][i] for a in attributes}
    return {k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in values.items()}


def now_iso(minutes_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


@pytest.mark.anyio
async def test_each_message_is_taken_or_refused_with_its_reason(client: httpx.AsyncClient) -> None:
    batch = [
        {"type": "identify", "messageId": "r-0", "userId": "R-1", "traits": {**EXAMPLE_ATTRIBUTES, "address": {"city": "Lyon"}},
         "timestamp": now_iso(60)},
        {"type": "track", "messageId": "r-1", "userId": "R-1", "event": "demo_request", "timestamp": now_iso(30)},
        {"type": "track", "messageId": "r-2", "anonymousId": "anon-1", "event": "page_view", "timestamp": now_iso(30)},
        {"type": "page", "messageId": "r-3", "userId": "R-1", "timestamp": now_iso(30)},
        "not an object",
        {"type": "identify", "messageId": "r-5", "userId": "R-1", "traits": {"employee_count": "250 employees"}},
        {"type": "track", "messageId": "r-6", "userId": "R-1", "event": "demo_request", "timestamp": "2999-01-01T00:00:00Z"},
        {"type": "track", "messageId": "r-7", "userId": "R-1", "timestamp": now_iso(10)},
        {"type": "track", "messageId": "r-8", "userId": "R-1", "event": "demo_request", "timestamp": 1717232400},
        {"type": "group", "messageId": "r-9", "userId": "R-1", "groupId": "acc-42", "timestamp": now_iso(5)},
        {"type": "track", "messageId": "r-10", "userId": "R-1", "event": "Shared on LinkedIn", "timestamp": now_iso(1)},
        {"type": "track", "messageId": "r-1", "userId": "R-1", "event": "demo_request", "timestamp": now_iso(30)},  # again
        {"type": "track", "userId": "R-1", "event": "demo_request", "timestamp": now_iso(30)},  # no messageId
    ]

    response = await client.post("/events", json={"batch": batch, "context": {"library": {"name": "analytics-node"}}})

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["received"], body["accepted"], body["duplicates"], body["refused"]) == (13, 4, 1, 8)
    reasons = {r["index"]: r["reason"] for r in body["refusals"]}
    assert "userId: missing" in reasons[2]
    assert "'page' is not taken" in reasons[3]
    assert reasons[4] == "not a JSON object"
    assert reasons[5].startswith("traits.employee_count: must be a finite number")
    assert "in the future" in reasons[6]
    assert reasons[7].startswith("event: missing")
    assert "timestamp" in reasons[8] and "not a number" in reasons[8]
    assert reasons[12].startswith("messageId")
    notes = {n["index"]: n["note"] for n in body["notes"]}
    assert "['address']" in notes[0]
    assert "counted as other" in notes[10]
    assert body["leads_rescored"] == 1

    again = await client.post("/events", json={"batch": batch})
    assert (again.json()["accepted"], again.json()["duplicates"], again.json()["leads_rescored"]) == (0, 5, 0)

    scored = await client.get("/leads/R-1/score")
    assert scored.status_code == 200, scored.text
    assert scored.json()["lead_id"] == "R-1"
    assert not any("attributes missing" in w for w in scored.json()["warnings"])


@pytest.mark.anyio
async def test_score_by_lead_id_and_unknown_leads(client: httpx.AsyncClient, store_url: str) -> None:
    identify = {"type": "identify", "messageId": "s-0", "userId": "jane.doe@acme.com", "traits": dict(EXAMPLE_ATTRIBUTES),
                "timestamp": now_iso(120)}  # fmt: skip
    assert (await client.post("/events", json={"batch": [identify]})).status_code == 202

    by_id = await client.post("/score", json={"lead_id": "jane.doe@acme.com", "top_k": 1})
    by_path = await client.get("/leads/jane.doe@acme.com/score", params={"top_k": 1})
    unknown = await client.get("/leads/nobody@example.com/score")
    unknown_by_id = await client.post("/score", json={"lead_id": "nobody@example.com"})
    both = await client.post("/score", json={"lead_id": "x", "lead": {"lead_id": "x", "created_at": "2024-03-01"}})
    neither = await client.post("/score", json={})
    bad_query = await client.get("/leads/jane.doe@acme.com/score", params={"as_of": "2999-01-01"})

    assert by_id.status_code == 200 and by_path.status_code == 200, (by_id.text, by_path.text)
    assert by_id.json()["probability"] == by_path.json()["probability"]
    assert len(by_id.json()["reasons"]["up"]) <= 1
    assert unknown.status_code == 404 and unknown_by_id.status_code == 404
    assert unknown.json()["detail"][0]["msg"] == "no lead 'nobody@example.com' in the lead store"
    assert unknown_by_id.json()["detail"][0]["loc"] == ["lead_id"]
    assert both.status_code == 400 and neither.status_code == 400
    assert bad_query.status_code == 400, bad_query.text

    forgotten = CliRunner().invoke(cli, ["forget", "jane.doe@acme.com", "--lead-store", store_url])
    assert forgotten.exit_code == 0, forgotten.output
    assert "deleted 2 rows of the lead from the lead store" in forgotten.output  # the lead and its last score
    assert (await client.get("/leads/jane.doe@acme.com/score")).status_code == 404
    replayed = await client.post("/events", json={"batch": [identify]})
    assert replayed.json()["duplicates"] == 1  # a pipeline's retry does not store the erased lead again
    assert (await client.get("/leads/jane.doe@acme.com/score")).status_code == 404


@pytest.mark.anyio
async def test_an_empty_or_oversized_batch_is_a_400(client: httpx.AsyncClient) -> None:
    from serving.events import MAX_EVENT_MESSAGES

    empty = await client.post("/events", json={"batch": []})
    missing = await client.post("/events", json={"events": []})
    over = await client.post("/events", json={"batch": [{}] * (MAX_EVENT_MESSAGES + 1)})

    assert [r.status_code for r in (empty, missing, over)] == [400, 400, 400]
    assert empty.json()["detail"][0]["loc"] == ["batch"]


def test_forget_with_no_store_and_no_log_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_STATE_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("LEADSCORE_LEAD_STORE", raising=False)
    result = CliRunner().invoke(cli, ["forget", "jane@acme.com"])
    assert result.exit_code == 2
    assert "nothing to erase from" in result.output
    missing = CliRunner().invoke(cli, ["forget", "jane@acme.com", "--lead-store", f"sqlite:///{tmp_path / 'no' / 'leads.db'}"])
    assert missing.exit_code == 2 and "no such database" in missing.output
    assert not (tmp_path / "no").exists()
