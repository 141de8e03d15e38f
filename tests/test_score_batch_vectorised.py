"""`POST /score_batch` scores its leads at once (`score_read_leads`: one event index, one prediction)
and answers each lead exactly as `POST /score` (`score_lead_with_features`) does: probabilities,
scores, tiers, reasons, grid and per-lead warnings, on simulated leads and odd ones."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from model.scoring import LeadIn, read_lead, score_lead_with_features, score_read_leads
from training.config import ProjectConfig


def _lead_body(lead: pd.Series, events: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    attributes = {}
    for c in columns:
        value = lead[c]
        attributes[c] = None if value is None or (isinstance(value, float) and np.isnan(value)) else value
    return {
        "lead_id": str(lead["lead_id"]),
        "created_at": pd.Timestamp(lead["created_at"]).isoformat(),
        "attributes": attributes,
        "interactions": [{"type": t, "occurred_at": pd.Timestamp(o).isoformat()} for t, o in zip(events["type"], events["occurred_at"], strict=True)],
    }


def odd(body: dict[str, Any], created_at: str, i: int) -> dict[str, Any]:
    """A lead changed to raise each warning `score_lead` gives (one kind per lead, by `i`)."""
    body = {**body, "attributes": dict(body["attributes"]), "interactions": list(body["interactions"])}
    kind = i % 6
    if kind == 0:
        body["attributes"]["industry"] = "asteroid mining"  # unseen in training
        body["attributes"]["job_role"] = "jane@example.com"  # unseen, and personal: the score log keeps "(unseen)"
    elif kind == 1:
        body["interactions"].append({"type": "carrier_pigeon", "occurred_at": created_at})  # outside the vocabulary
    elif kind == 2:
        body["interactions"].append({"type": "demo_request", "occurred_at": "2099-01-01T00:00:00Z"})  # after as_of
        body["interactions"].append({"type": "page_view", "occurred_at": "1999-01-01T00:00:00Z"})  # before created_at
    elif kind == 3:
        del body["attributes"]["country"]  # missing
        body["attributes"]["shoe_size"] = 44  # not used by the model
    elif kind == 4:
        body["interactions"].append({"type": "   ", "occurred_at": created_at})  # no type
        body["attributes"]["employee_count"] = " 1.200 "  # a number written as text
    else:
        body["interactions"] = []
    return body


@pytest.fixture(scope="module")
def simulated_bodies(simulated_dataset) -> tuple[list[dict[str, Any]], str]:
    data = simulated_dataset
    as_of = data.data_end - pd.Timedelta(days=100)
    leads = data.leads[data.leads["created_at"] <= as_of].sample(90, random_state=3)
    by_lead = dict(tuple(data.interactions.groupby("lead_id")))
    empty = data.interactions.iloc[:0]
    columns = ProjectConfig().features.attribute_columns()
    bodies = []
    for i, (_, lead) in enumerate(leads.iterrows()):
        events = by_lead.get(lead["lead_id"], empty)
        events = events[events["occurred_at"] <= as_of + pd.Timedelta(days=30)]  # some after as_of
        body = _lead_body(lead, events, columns)
        bodies.append(odd(body, body["created_at"], i) if i < 30 else body)
    return bodies, as_of.isoformat()


def _same_features(a: dict[str, object], b: dict[str, object]) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and isinstance(b[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


@pytest.mark.parametrize(("with_reasons", "top_k", "language"), [(False, 3, "en"), (True, 3, "en"), (True, 2, "fr")])
def test_vectorised_scores_equal_one_lead_scores(training_result, simulated_bodies, with_reasons: bool, top_k: int, language: str) -> None:
    model = training_result.model
    bodies, as_of_text = simulated_bodies
    as_of = pd.Timestamp(as_of_text).to_pydatetime()
    leads = [LeadIn.model_validate(b) for b in bodies]

    batch = score_read_leads(model, [read_lead(model, lead, as_of) for lead in leads], with_reasons=with_reasons, top_k=top_k, language=language)

    warned = 0
    for lead, (out, features) in zip(leads, batch, strict=True):
        one, one_features = score_lead_with_features(model, lead, as_of, with_reasons=with_reasons, top_k=top_k, language=language)
        assert out == one, lead.lead_id
        assert _same_features(features, one_features), lead.lead_id
        warned += bool(out.warnings)
    assert warned >= 30  # the odd leads were scored with their warnings
    assert any("unseen in training" in w for out, _ in batch for w in out.warnings)
    assert all(f["job_role"] != "jane@example.com" for _, f in batch)


def test_vectorised_scores_leads_at_different_times(training_result, simulated_bodies) -> None:
    model = training_result.model
    bodies, as_of_text = simulated_bodies
    as_of = pd.Timestamp(as_of_text)
    leads = [LeadIn.model_validate(b) for b in bodies[:20]]
    times = [(as_of + pd.Timedelta(days=3 * i)).to_pydatetime() for i in range(len(leads))]

    batch = score_read_leads(model, [read_lead(model, lead, t) for lead, t in zip(leads, times, strict=True)])

    for lead, t, (out, _) in zip(leads, times, batch, strict=True):
        assert out == score_lead_with_features(model, lead, t, with_reasons=False)[0]


# -- over the ASGI app: /score_batch against /score ------------------------------------------------


@pytest.fixture(scope="module")
async def client(trained_bundle: Path, start_service, lead_store_url) -> AsyncIterator[httpx.AsyncClient]:
    async with start_service(trained_bundle, LEADSCORE_LEAD_STORE=lead_store_url('store')) as http:
        yield http


@pytest.mark.anyio
@pytest.mark.parametrize("explain", [False, True])
async def test_score_batch_answers_each_lead_as_score_does(client: httpx.AsyncClient, simulated_bodies, explain: bool) -> None:
    bodies, as_of = simulated_bodies
    leads = bodies[:40]

    response = await client.post("/score_batch", json={"leads": leads, "as_of": as_of, "explain": explain, "top_k": 2})

    assert response.status_code == 200, response.text
    for lead, result in zip(leads, response.json()["results"], strict=True):
        single = (await client.post("/score", json={"lead": lead, "as_of": as_of, "explain": explain, "top_k": 2})).json()
        assert result == single
    assert sum(bool(r["warnings"]) for r in response.json()["results"]) >= 30
