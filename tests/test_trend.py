"""A lead's trend: its score now, 7 and 30 days before from its own history cut there, labelled by thresholds set on validation."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.bench_model import example_lead
from features.engine import snapshot_features
from features.vocabulary import NEVER_SEEN_DAYS, recency_feature
from model.bundle import META_FILE, ScoringModel
from model.scoring import TABLE_COLUMNS, LeadIn, ScoreOut, score_lead, score_table
from model.trend import TREND_LABEL_DAYS, TrendThresholds, trend_thresholds_from_changes
from training.trend import positive_signal_features, positive_signal_types

AS_OF = datetime.fromisoformat("2024-05-01T00:00:00+00:00")
DAY = timedelta(days=1)
EVENTS = (
    {"type": "page_view", "occurred_at": "2024-03-01T10:05:00Z", "channel": "web"},
    {"type": "pricing_page_view", "occurred_at": "2024-04-10T09:00:00Z", "channel": "web"},
    {"type": "webinar_attended", "occurred_at": "2024-04-27T16:00:00Z"},
    {"type": "demo_request", "occurred_at": "2024-04-29T11:00:00Z"},
)
# The types the monotone model below is constrained on: one more of them may never lower its score.
POSITIVE_TYPES = ("pricing_page_view", "webinar_attended", "demo_request", "meeting_booked")


@pytest.fixture(scope="module")
def model(trained_bundle: Path) -> ScoringModel:
    return ScoringModel.load(trained_bundle)


def _lead(lead_id: str, created_at: datetime, events: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> LeadIn:
    return LeadIn(**example_lead(lead_id, created_at.isoformat(), events))


# -- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "improving_at", "declining_at"),
    [
        ([0, 0, 0, 0, 0], 1, -1),  # nothing moved: only a change of a point or more counts
        (list(range(-10, 11)), 6, -6),  # the 20 % and 80 % quantiles of -10..10
        ([-3, -1, 0, 0, 0, 0, 0, 0, 0, 40], 1, -1),  # quantiles at 0: still a point away from it
        ([5, 6, 7, 8, 9], 9, -1),  # all rose: the declining threshold stays below zero
    ],
)
def test_thresholds_are_the_tail_quantiles_of_the_changes(changes: list[int], improving_at: int, declining_at: int) -> None:
    thresholds = trend_thresholds_from_changes(np.array(changes))
    assert thresholds is not None
    assert (thresholds.improving_at, thresholds.declining_at, thresholds.n_reference) == (improving_at, declining_at, len(changes))
    assert trend_thresholds_from_changes(np.array([])) is None


def test_labels_follow_the_thresholds() -> None:
    t = TrendThresholds(improving_at=3, declining_at=-2, tail_share=0.2, n_reference=10)
    assert [t.label(50, before) for before in (47, 48, 50, 52, 53, None)] == [
        "improving", "steady", "steady", "declining", "declining", None,
    ]  # fmt: skip
    codes = t.label_codes(np.array([50, 50, 50, 50, 50, 50]), np.array([47, 48, 50, 52, 53, -1]))
    assert codes.tolist() == [0, 1, 1, 2, 2, -1]


def test_the_thresholds_come_from_the_validation_snapshots(training_result, simulated_dataset, tmp_path: Path) -> None:
    model, data = training_result.model, simulated_dataset
    thresholds = model.meta.trend
    assert thresholds is not None
    # Recomputed here from the validation snapshots alone: their scores now and 7 days before.
    valid = training_result.valid.snapshots
    created = valid["lead_id"].map(data.leads.set_index("lead_id")["created_at"])
    before = valid["as_of"] - pd.Timedelta(days=TREND_LABEL_DAYS)
    existed = (created <= before).to_numpy()
    past = pd.DataFrame({"lead_id": valid["lead_id"][existed].to_numpy(), "as_of": before[existed].to_numpy()})
    now = model.score_0_100(model.probability(training_result.valid.matrix))[existed]
    then = model.score_0_100(model.probability(model.encode(snapshot_features(data.leads, data.interactions, past, model.spec))))
    assert thresholds == trend_thresholds_from_changes(now - then)
    assert thresholds.n_reference == int(existed.sum())
    # Not the training or the test period's snapshots: they are other rows, in other numbers.
    for other in (training_result.train.snapshots, training_result.test.snapshots):
        other_created = other["lead_id"].map(data.leads.set_index("lead_id")["created_at"])
        assert int((other_created <= other["as_of"] - pd.Timedelta(days=TREND_LABEL_DAYS)).sum()) != thresholds.n_reference
    # The bundle keeps them.
    assert ScoringModel.load(model.save(tmp_path / "bundle")).meta.trend == thresholds


# -- one lead -------------------------------------------------------------------------------


def test_the_past_scores_are_the_lead_scored_then(model: ScoringModel) -> None:
    created = AS_OF - 60 * DAY
    out = score_lead(model, _lead("L-t", created, EVENTS), AS_OF)
    week = score_lead(model, _lead("L-t", created, EVENTS), AS_OF - 7 * DAY)
    month = score_lead(model, _lead("L-t", created, EVENTS), AS_OF - 30 * DAY)
    assert (out.score_7d_ago, out.score_30d_ago) == (week.score, month.score)
    assert out.trend == model.meta.trend.label(out.score, week.score)  # type: ignore[union-attr]
    # This lead's last week holds a webinar and a demo request: it rose.
    assert out.score > week.score


def test_a_lead_scored_at_an_instant_ignores_later_events(model: ScoringModel) -> None:
    created = AS_OF - 60 * DAY
    out = score_lead(model, _lead("L-later", created, EVENTS), AS_OF - 3 * DAY)
    later = [
        {"type": "meeting_booked", "occurred_at": (AS_OF - 2 * DAY).isoformat()},
        {"type": "demo_request", "occurred_at": AS_OF.isoformat()},
    ]
    with_later = score_lead(model, _lead("L-later", created, [*EVENTS, *later]), AS_OF - 3 * DAY)
    fields = ("probability", "score", "score_7d_ago", "score_30d_ago", "trend", "fit", "engagement", "cell")
    assert [getattr(with_later, f) for f in fields] == [getattr(out, f) for f in fields]
    # Events after the instant 7 days before do not reach the score then, only the score now.
    recent = [{"type": "meeting_booked", "occurred_at": (AS_OF - 1 * DAY).isoformat()}]
    base = score_lead(model, _lead("L-recent", created, EVENTS), AS_OF)
    more = score_lead(model, _lead("L-recent", created, [*EVENTS, *recent]), AS_OF)
    assert (more.score_7d_ago, more.score_30d_ago) == (base.score_7d_ago, base.score_30d_ago)
    assert more.score >= base.score


@pytest.mark.parametrize(("age_days", "has_week", "has_month"), [(3, False, False), (10, True, False), (45, True, True)])
def test_a_lead_not_yet_created_has_no_score_then(model: ScoringModel, age_days: int, has_week: bool, has_month: bool) -> None:
    created = AS_OF - age_days * DAY
    out = score_lead(model, _lead("L-young", created, [{"type": "page_view", "occurred_at": created.isoformat()}]), AS_OF)
    assert (out.score_7d_ago is not None, out.score_30d_ago is not None) == (has_week, has_month)
    assert (out.trend is not None) == has_week


def test_an_older_bundle_scores_without_trend(trained_bundle: Path, tmp_path: Path) -> None:
    older = tmp_path / "older"
    shutil.copytree(trained_bundle, older)
    meta = json.loads((older / META_FILE).read_text())
    del meta["trend"]
    (older / META_FILE).write_text(json.dumps(meta))
    model, current = ScoringModel.load(older), ScoringModel.load(trained_bundle)
    assert model.meta.trend is None
    for with_reasons in (True, False):
        out = score_lead(model, _lead("L-old", AS_OF - 60 * DAY, EVENTS), AS_OF, with_reasons=with_reasons)
        now = score_lead(current, _lead("L-old", AS_OF - 60 * DAY, EVENTS), AS_OF, with_reasons=with_reasons)
        assert (out.trend, out.score_7d_ago, out.score_30d_ago) == (None, None, None)
        assert (out.probability, out.score, out.fit, out.reasons) == (now.probability, now.score, now.fit, now.reasons)


# -- the batch path -------------------------------------------------------------------------


def _lead_from_tables(lead: pd.Series, events: pd.DataFrame, columns: list[str]) -> LeadIn:
    attributes = {c: (None if pd.isna(lead[c]) else lead[c]) for c in columns}
    interactions = [{"type": t, "occurred_at": o} for t, o in zip(events["type"], events["occurred_at"], strict=True)]
    return LeadIn.model_validate({"lead_id": lead["lead_id"], "created_at": lead["created_at"], "attributes": attributes,
                                  "interactions": interactions})  # fmt: skip


@pytest.mark.parametrize("with_reasons", [False, True])
def test_score_table_gives_the_sub_scores_and_trend_score_lead_gives(training_result, simulated_dataset, with_reasons: bool) -> None:
    model, data = training_result.model, simulated_dataset
    as_of = data.data_end - pd.Timedelta(days=100)
    # Leads of every age: some created less than 7 or 30 days before as_of.
    young = data.leads[(data.leads["created_at"] <= as_of) & (data.leads["created_at"] > as_of - pd.Timedelta(days=30))]
    leads = pd.concat([young.sample(30, random_state=2), data.leads[data.leads["created_at"] <= as_of].sample(90, random_state=3)])
    leads = leads.drop_duplicates("lead_id")
    table = score_table(model, leads, data.interactions, as_of.to_pydatetime(), with_reasons=with_reasons)
    assert list(table.columns) == list(TABLE_COLUMNS)
    by_lead = dict(tuple(data.interactions.groupby("lead_id")))
    columns = model.spec.attribute_columns()
    fields = ("score", "fit", "engagement", "cell", "score_7d_ago", "score_30d_ago", "trend")
    for row, (_, lead) in zip(table.to_dict("records"), leads.iterrows(), strict=True):
        one = score_lead(model, _lead_from_tables(lead, by_lead.get(lead["lead_id"], data.interactions.iloc[:0]), columns),
                         as_of.to_pydatetime(), with_reasons=with_reasons)  # fmt: skip
        got = tuple(None if pd.isna(row[f]) else row[f] for f in fields)
        assert got == tuple(getattr(one, f) for f in fields), lead["lead_id"]
    assert table["score_7d_ago"].isna().any() and table["score_7d_ago"].notna().any()
    assert set(table["trend"].dropna()) <= {"improving", "steady", "declining"}


def test_json_lines_to_csv_carry_the_columns(trained_bundle: Path, model: ScoringModel, tmp_path: Path) -> None:
    from training import workflow

    leads = [_lead(f"L-csv-{i}", AS_OF - (5 + 20 * i) * DAY, EVENTS[i:]) for i in range(3)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(lead.model_dump_json() + "\n" for lead in leads))

    class Quiet:
        def say(self, message: str) -> None: ...
        def warn(self, message: str) -> None: ...

    assert workflow.score_lines(source, tmp_path / "out.csv", model, AS_OF, reasons=False, language="en", console=Quiet()) == []
    table = pd.read_csv(tmp_path / "out.csv")
    assert list(table.columns) == list(TABLE_COLUMNS)
    for row, lead in zip(table.to_dict("records"), leads, strict=True):
        one = score_lead(model, lead, AS_OF, with_reasons=False)
        for f in ("fit", "engagement", "cell", "score_7d_ago", "score_30d_ago", "trend"):
            assert (None if pd.isna(row[f]) else row[f]) == getattr(one, f), (lead.lead_id, f)


# -- the service ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def client(trained_bundle: Path, start_service, lead_store_url) -> AsyncIterator[httpx.AsyncClient]:
    async with start_service(trained_bundle, LEADSCORE_LEAD_STORE=lead_store_url('trend')) as http:
        yield http


@pytest.mark.anyio
async def test_every_route_answers_the_trend(client: httpx.AsyncClient, model: ScoringModel) -> None:
    created = AS_OF - 60 * DAY
    lead = example_lead("L-api-trend", created.isoformat(), EVENTS)
    expected = score_lead(model, LeadIn(**lead), AS_OF)
    fields = ("score", "score_7d_ago", "score_30d_ago", "trend")
    assert expected.trend is not None and expected.score_30d_ago is not None

    single = await client.post("/score", json={"lead": lead, "as_of": AS_OF.isoformat()})
    batch = await client.post("/score_batch", json={"leads": [lead], "as_of": AS_OF.isoformat()})
    assert single.status_code == 200 and batch.status_code == 200, (single.text, batch.text)
    for body in (single.json(), batch.json()["results"][0]):
        assert tuple(body[f] for f in fields) == tuple(getattr(expected, f) for f in fields)

    messages: list[dict[str, Any]] = [{
        "type": "identify", "messageId": "id-trend", "userId": lead["lead_id"],
        "traits": {**lead["attributes"], "createdAt": created.isoformat()}, "timestamp": created.isoformat(),
    }]  # fmt: skip
    messages += [
        {"type": "track", "messageId": f"ev-trend-{i}", "userId": lead["lead_id"], "event": e["type"],
         "properties": {"channel": e["channel"]} if "channel" in e else {}, "timestamp": e["occurred_at"]}
        for i, e in enumerate(EVENTS)
    ]  # fmt: skip
    sent = await client.post("/events", json={"batch": messages})
    assert sent.status_code == 202 and sent.json()["refused"] == 0, sent.text
    stored = await client.get(f"/leads/{lead['lead_id']}/score", params={"as_of": AS_OF.isoformat()})
    assert stored.status_code == 200, stored.text
    assert tuple(stored.json()[f] for f in fields) == tuple(getattr(expected, f) for f in fields)


# -- monotone in positive signals -----------------------------------------------------------


@pytest.fixture(scope="module")
def monotone_model(simulated_dataset) -> ScoringModel:
    """The simulated funnel's model trained with every feature a positive-signal event moves constrained its way."""
    from sources.grids import load_grid
    from training.config import ProjectConfig
    from training.pipeline import run_training

    up, down = set(), set()
    for event_type in POSITIVE_TYPES:
        raises, lowers = positive_signal_features(ProjectConfig().features, event_type)
        up.update(raises)
        down.update(lowers)
    # As leadscore.yaml declares it: the config then orders "never" after every recency.
    config = ProjectConfig.model_validate({"training": {
        "n_bootstrap": 0, "lightgbm": {"monotone_increasing": sorted(up), "monotone_decreasing": sorted(down)},
    }})  # fmt: skip
    assert config.features.never_seen_days == NEVER_SEEN_DAYS
    return run_training(simulated_dataset, config.features, config.training, load_grid(config.training.grid)).model


def test_a_constrained_recency_without_a_never_value_is_refused_by_name(simulated_dataset) -> None:
    from sources.grids import load_grid
    from training.config import ProjectConfig
    from training.pipeline import run_training

    config = ProjectConfig()
    config.training.lightgbm.monotone_decreasing = [recency_feature("pricing_page_view")]  # set after the config was read
    assert config.features.never_seen_days is None
    with pytest.raises(ValueError, match=r"monotone_decreasing: \['days_since_pricing_page_view'\].*features\.never_seen_days"):
        run_training(simulated_dataset, config.features, config.training, load_grid(config.training.grid))


def test_never_seen_days_is_the_recency_of_a_type_never_shown_on_both_paths(model: ScoringModel) -> None:
    spec = model.spec.model_copy(update={"never_seen_days": NEVER_SEEN_DAYS})
    created = AS_OF - 20 * DAY
    lead = _lead("L-never", created, [{"type": "pricing_page_view", "occurred_at": (created + 3 * DAY).isoformat()}])
    from model.scoring import lead_rows, read_lead

    row = lead_rows([read_lead(model, lead, AS_OF)], spec).row(0)
    assert row[recency_feature("pricing_page_view")] == pytest.approx(17.0)
    for event_type in spec.interaction_types:
        if event_type != "pricing_page_view":
            assert row[recency_feature(event_type)] == NEVER_SEEN_DAYS, event_type
    missing = lead_rows([read_lead(model, lead, AS_OF)], model.spec).row(0)
    assert all(np.isnan(missing[recency_feature(t)]) for t in spec.interaction_types if t != "pricing_page_view")


def test_the_monotone_model_has_exactly_the_positive_signals_it_was_constrained_on(monotone_model: ScoringModel, model: ScoringModel) -> None:
    assert positive_signal_types(monotone_model) == list(POSITIVE_TYPES)
    assert positive_signal_types(model) == []  # the default config constrains nothing
    assert monotone_model.meta.trend is not None


# An event: a positive type, some seconds after the lead's creation (as a share of its age), replayed in time order.
positive_events = st.lists(st.tuples(st.sampled_from(POSITIVE_TYPES), st.floats(0.0, 1.0)), min_size=1, max_size=8)


def _assert_monotone_replay(model: ScoringModel, age_days: int, events: list[tuple[str, float]], *, seen_at_creation: bool) -> None:
    """Replay a lead's history one positive event at a time (time order), scored at AS_OF after each; assert the trend is monotone.

    With `seen_at_creation`, the lead starts with one event of every positive type at its creation.
    """
    created = AS_OF - age_days * DAY
    base = [{"type": t, "occurred_at": created.isoformat()} for t in POSITIVE_TYPES] if seen_at_creation else []
    history = sorted(
        ({"type": t, "occurred_at": (created + share * (AS_OF - created)).isoformat()} for t, share in events),
        key=lambda e: e["occurred_at"],
    )
    replayed: list[ScoreOut] = [
        score_lead(model, _lead("L-replay", created, base + history[:k]), AS_OF, with_reasons=False) for k in range(len(history) + 1)
    ]
    for field in ("score", "score_7d_ago", "score_30d_ago"):
        values = [getattr(out, field) for out in replayed]
        if values[0] is None:  # the lead did not exist then, whatever it does later
            assert all(v is None for v in values), (field, values)
            continue
        assert all(b >= a for a, b in zip(values, values[1:], strict=False)), (field, values, history)
    labels = [out.trend for out in replayed]
    if "improving" in labels:
        assert "declining" not in labels[labels.index("improving") :], (labels, [o.score for o in replayed], history)


@settings(max_examples=60, deadline=None)
@given(age_days=st.integers(1, 120), events=positive_events)
def test_the_trend_is_monotone_as_positive_signals_are_added(monotone_model: ScoringModel, age_days: int, events: list[tuple[str, float]]) -> None:
    # A positive signal: one more event of a type the model is constrained on, which the lead has
    # already shown (an event of each at its creation). Every feature it moves then moves within
    # the constrained range: counts up, days since down, never from missing to a number.
    _assert_monotone_replay(monotone_model, age_days, events, seen_at_creation=True)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(age_days=st.integers(1, 120), events=positive_events)
def test_the_trend_is_monotone_from_the_first_positive_signal(monotone_model: ScoringModel, age_days: int, events: list[tuple[str, float]]) -> None:
    _assert_monotone_replay(monotone_model, age_days, events, seen_at_creation=False)


# -- the report -----------------------------------------------------------------------------


def test_the_report_shows_each_cell_and_trend_on_the_test_period(explanations, training_result) -> None:
    from training.report_segments import cell_table, trend_table

    test, model = training_result.test, training_result.model
    lead_ids = test.snapshots["lead_id"].to_numpy()
    cells = cell_table(model, test.matrix, test.y, lead_ids)
    assert cells is not None
    flat = [c for row in cells for c in row]
    assert [c["cell"] for c in flat] == ["A1", "A2", "A3", "B1", "B2", "B3", "C1", "C2", "C3"]
    assert sum(c["n_snapshots"] for c in flat) == len(test.y)
    # Each cell's rate is its own snapshots' rate: recomputed from the scored cells.
    scored = _cells_of(model, test.matrix)
    for c in flat:
        mask = np.array([s == c["cell"] for s in scored])
        assert c["n_snapshots"] == int(mask.sum()) and c["conversion_rate"] == pytest.approx(test.y[mask].mean())
    # On the simulated funnel, the best cell converts far more often than the worst.
    assert cells[0][0]["conversion_rate"] > 3 * cells[2][2]["conversion_rate"]

    trends = trend_table(training_result.test_trend, test.y, lead_ids)
    assert trends is not None and training_result.test_trend is not None
    assert sum(t["n_snapshots"] for t in trends) == len(test.y)
    assert [t["trend"] for t in trends[:3]] == ["improving", "steady", "declining"]
    page = explanations.html
    assert 'id="cells"' in page and 'id="trend"' in page
    for t in trends:
        assert t["trend"] in page


def _cells_of(model: ScoringModel, matrix: np.ndarray) -> list[str]:
    # The cell of each row as `ScoringModel.subscores` (the service's scalar path) gives it.
    fit, engagement = model.fit_engagement_sums(model.contributions(matrix))
    subscores = [model.subscores(float(f), float(e)) for f, e in zip(fit, engagement, strict=True)]
    return [s[2] for s in subscores if s is not None]
