"""Fit and engagement sub-scores: the exact contributions of attributes and behaviour, placed on reference leads."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.testing import assert_allclose

from benchmarks.bench_model import example_lead
from model.bundle import META_FILE, ScoringModel
from model.scoring import LeadIn, ScoreOut, score_lead

AS_OF = "2024-05-01T00:00:00Z"
CREATED_AT = "2024-03-01T10:00:00Z"
BASE_EVENTS = ({"type": "page_view", "occurred_at": "2024-03-01T10:05:00Z", "channel": "web"},)
# Interactions the simulator's buyers send on their way to converting (the heaviest engagement weights).
POSITIVE_EVENTS = (
    {"type": "pricing_page_view", "occurred_at": "2024-04-20T09:00:00Z", "channel": "web"},
    {"type": "webinar_attended", "occurred_at": "2024-04-25T16:00:00Z"},
    {"type": "demo_request", "occurred_at": "2024-04-28T11:00:00Z"},
    {"type": "meeting_booked", "occurred_at": "2024-04-29T15:00:00Z"},
)


@pytest.fixture(scope="module")
def model(trained_bundle: Path) -> ScoringModel:
    return ScoringModel.load(trained_bundle)


def test_the_bundle_stores_the_scales(model: ScoringModel) -> None:
    scale = model.meta.subscores
    assert scale is not None
    for quantiles, cuts in ((scale.fit_quantiles, scale.fit_cuts), (scale.engagement_quantiles, scale.engagement_cuts)):
        assert len(quantiles) == 101 and np.all(np.diff(quantiles) >= 0)
        assert quantiles[0] < cuts[0] <= cuts[1] < quantiles[-1]


def test_fit_and_engagement_add_up_to_the_raw_score(model: ScoringModel, training_result) -> None:
    # Simulated test-period leads: the two groups plus the expected value are the model's own raw score.
    matrix = training_result.test.matrix
    contributions = model.contributions(matrix)
    fit, engagement = model.fit_engagement_sums(contributions)

    assert_allclose(fit + engagement + contributions[:, -1], model.raw(matrix), rtol=0, atol=1e-9)
    # Both groups carry signal on these leads: neither is a constant.
    assert np.std(fit) > 0 and np.std(engagement) > 0


def test_the_sums_in_one_pass_are_the_contributions_summed(model: ScoringModel, training_result) -> None:
    # Every sub-score comes from `fit_engagement_of`: the contributions' group sums, without the contributions.
    matrix = training_result.test.matrix
    fit, engagement = model.fit_engagement_sums(model.contributions(matrix))
    one_pass = model.fit_engagement_of(matrix)

    assert_allclose(one_pass[0], fit, rtol=0, atol=1e-9)
    assert_allclose(one_pass[1], engagement, rtol=0, atol=1e-9)


def test_the_raw_score_from_the_sums_is_the_prediction(model: ScoringModel, training_result) -> None:
    # Scoring without reasons takes the rows of now's raw score from their sub-score sums instead of predicting them again.
    matrix = training_result.test.matrix
    raw = model.raw_from_fit_engagement(*model.fit_engagement_of(matrix))

    assert raw is not None
    assert_allclose(raw, model.raw(matrix), rtol=0, atol=1e-9)
    # Not a constant offset that happens to line up: the scores spread over the rows.
    assert np.std(raw) > 0.1


@pytest.mark.parametrize("lead_id", ["L-fit-1", "L-fit-2"])
def test_the_sub_scores_come_from_the_lead_s_own_sums(model: ScoringModel, lead_id: str) -> None:
    out = score_lead(model, LeadIn(**example_lead(lead_id, CREATED_AT, POSITIVE_EVENTS)), as_of=_utc(AS_OF))
    assert out.fit is not None and out.engagement is not None and out.cell is not None
    assert 0 <= out.fit <= 100 and 0 <= out.engagement <= 100
    # The same answer without reasons (the sums come from the same one pass over the tables).
    bare = score_lead(model, LeadIn(**example_lead(lead_id, CREATED_AT, POSITIVE_EVENTS)), as_of=_utc(AS_OF), with_reasons=False)
    assert (bare.fit, bare.engagement, bare.cell, bare.probability) == (out.fit, out.engagement, out.cell, out.probability)


@pytest.mark.parametrize("n_positive", range(len(POSITIVE_EVENTS)))
def test_more_positive_events_never_lower_engagement(model: ScoringModel, n_positive: int) -> None:
    before = _score(model, BASE_EVENTS + POSITIVE_EVENTS[:n_positive])
    after = _score(model, BASE_EVENTS + POSITIVE_EVENTS[: n_positive + 1])
    assert before.engagement is not None and after.engagement is not None
    assert after.engagement >= before.engagement, (n_positive, before.engagement, after.engagement)
    # Behaviour moves engagement, not fit: the attributes are the same.
    assert after.fit == before.fit


def test_the_cell_follows_the_thirds(model: ScoringModel) -> None:
    scale = model.meta.subscores
    assert scale is not None
    low, high = scale.fit_cuts
    e_low, e_high = scale.engagement_cuts
    cells = [model.subscores(fit, engagement) for fit, engagement in ((high, e_high), (low, e_low - 1.0), (low - 1.0, e_high + 1.0))]
    assert [c[2] if c is not None else None for c in cells] == ["A1", "B3", "C1"]


def test_an_older_bundle_still_scores_without_sub_scores(trained_bundle: Path, tmp_path: Path) -> None:
    older = tmp_path / "older"
    shutil.copytree(trained_bundle, older)
    meta = json.loads((older / META_FILE).read_text())
    del meta["subscores"]
    (older / META_FILE).write_text(json.dumps(meta))

    model = ScoringModel.load(older)
    assert model.meta.subscores is None
    for with_reasons in (True, False):
        out = score_lead(model, LeadIn(**example_lead("L-old", CREATED_AT, POSITIVE_EVENTS)), as_of=_utc(AS_OF), with_reasons=with_reasons)
        assert (out.fit, out.engagement, out.cell) == (None, None, None)
        assert 0 <= out.score <= 100


# -- over the ASGI app --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def client(trained_bundle: Path, start_service) -> AsyncIterator[httpx.AsyncClient]:
    """The session's ASGI app started on the trained bundle, called with a key of role score."""
    async with start_service(trained_bundle) as http:
        yield http


@pytest.mark.anyio
async def test_score_answers_fit_engagement_and_cell(client: httpx.AsyncClient, model: ScoringModel) -> None:
    lead = example_lead("L-api", CREATED_AT, POSITIVE_EVENTS)
    response = await client.post("/score", json={"lead": lead, "as_of": AS_OF})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    expected = score_lead(model, LeadIn(**lead), as_of=_utc(AS_OF))
    assert (body["fit"], body["engagement"], body["cell"]) == (expected.fit, expected.engagement, expected.cell)
    assert body["cell"][0] in "ABC" and body["cell"][1] in "123"

    batch = await client.post("/score_batch", json={"leads": [lead], "as_of": AS_OF})
    assert batch.status_code == 200, batch.text
    scored = batch.json()["results"][0]
    assert (scored["fit"], scored["engagement"], scored["cell"]) == (expected.fit, expected.engagement, expected.cell)


def _score(model: ScoringModel, events: tuple[dict[str, str], ...]) -> ScoreOut:
    return score_lead(model, LeadIn(**example_lead("L-more", CREATED_AT, events)), as_of=_utc(AS_OF))


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
