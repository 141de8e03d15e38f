"""The compiled behaviour kernel against a plain per-snapshot reference, on small random leads.

The reference reads the feature definitions literally: a snapshot sees its lead's events at or
before `as_of`; a window of w days holds the events younger than w days (one exactly w days old
is out); engagement is the sum of weight * 0.5 ** (age / half-life); active days are distinct
UTC days. Event ages are drawn around the windows' edges, at `as_of` and after it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.engine import SECONDS_PER_DAY, _positions, behaviour_matrix, build_event_index, engagement_weight
from features.spec import FeatureSpec
from features.vocabulary import (
    ACTIVE_DAYS_30D,
    ACTIVE_DAYS_TOTAL,
    ENGAGEMENT_DECAYED,
    EVENTS_TOTAL,
    LEAD_AGE_DAYS,
    OTHER_EVENTS_TOTAL,
    count_feature,
    property_feature,
    recency_feature,
)

TYPES = ["page_view", "demo_request", "email_open"]
WINDOWS = [1, 7, 30]
PROPERTIES = {"pages": ["sum", "max"], "amount": ["max"]}
N_LEADS = 3
AS_OF = 1_717_200_000  # 2024-06-01 00:00:00 UTC: a day boundary, so ages of whole days end on one
DAY = SECONDS_PER_DAY
# Ages (as_of - event time, seconds) on the rules' edges: at as_of, exactly a window old, a second
# either side, and in the future (negative: never seen).
EDGE_AGES = [0, 1, -1, -DAY, DAY - 1, DAY, 7 * DAY - 1, 7 * DAY, 7 * DAY + 1, 30 * DAY - 1, 30 * DAY, 30 * DAY + 1]

age_strategy = st.one_of(st.sampled_from(EDGE_AGES), st.integers(-3 * DAY, 80 * DAY))
# Quarters of whole numbers add exactly in any order, so a property sum has one right value.
value_strategy = st.one_of(st.none(), st.integers(-400, 4000).map(lambda q: q / 4))
event_strategy = st.lists(
    st.tuples(st.integers(0, N_LEADS - 1), age_strategy, st.integers(0, len(TYPES)), value_strategy, value_strategy),
    max_size=40,
)
# Snapshot instants relative to AS_OF: the same, a window earlier or later, or anywhere.
shift_strategy = st.one_of(st.sampled_from([0, -DAY, -7 * DAY, -30 * DAY, 1, -1, 7 * DAY]), st.integers(-40 * DAY, 10 * DAY))
snapshot_strategy = st.lists(st.tuples(st.integers(0, N_LEADS - 1), shift_strategy), min_size=1, max_size=8)


def _spec(never_seen_days: float | None) -> FeatureSpec:
    return FeatureSpec(
        email_column=None,
        interaction_types=TYPES,
        windows_days=WINDOWS,
        halflife_days=10.0,
        properties=PROPERTIES,
        never_seen_days=never_seen_days,
    )


def _reference_row(
    events: list[tuple[int, int, int, float | None, float | None]], lead: int, as_of: int, created: int, spec: FeatureSpec
) -> dict[str, float]:
    """One snapshot's features, computed from the definitions with plain Python."""
    seen = [(t, slot, pages, amount) for code, t, slot, pages, amount in events if code == lead and t <= as_of]
    row: dict[str, float] = {}
    never = math.nan if spec.never_seen_days is None else spec.never_seen_days
    for slot, event_type in enumerate(TYPES):
        times = [t for t, s, _, _ in seen if s == slot]
        for w in WINDOWS:
            row[count_feature(event_type, w)] = sum(1 for t in times if as_of - t < w * DAY)
        row[count_feature(event_type, None)] = len(times)
        row[recency_feature(event_type)] = (as_of - max(times)) / DAY if times else never
    row[EVENTS_TOTAL] = sum(1 for _, s, _, _ in seen if s < len(TYPES))
    row[OTHER_EVENTS_TOTAL] = sum(1 for _, s, _, _ in seen if s == len(TYPES))
    weights = [engagement_weight(t, spec) for t in TYPES] + [0.0]
    row[ENGAGEMENT_DECAYED] = sum(weights[s] * 0.5 ** ((as_of - t) / (spec.halflife_days * DAY)) for t, s, _, _ in seen)
    row[ACTIVE_DAYS_30D] = len({t // DAY for t, _, _, _ in seen if as_of - t < 30 * DAY})
    row[ACTIVE_DAYS_TOTAL] = len({t // DAY for t, _, _, _ in seen})
    row[LEAD_AGE_DAYS] = (as_of - created) / DAY
    for name, aggregates in PROPERTIES.items():
        for aggregate in aggregates:
            for w in (*WINDOWS, None):
                values = [
                    v for t, _, pages, amount in seen
                    if (v := pages if name == "pages" else amount) is not None and (w is None or as_of - t < w * DAY)
                ]  # fmt: skip
                row[property_feature(name, aggregate, w)] = sum(values) if aggregate == "sum" else max(values, default=math.nan)
    return row


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_events=event_strategy, snapshots=snapshot_strategy, never_seen_days=st.sampled_from([None, 36_500.0]))
def test_the_kernel_agrees_with_the_definitions(raw_events, snapshots, never_seen_days: float | None) -> None:
    spec = _spec(never_seen_days)
    created = [AS_OF - 90 * DAY, AS_OF - 5 * DAY, AS_OF - 40 * DAY]
    # Events in the order drawn: the index sorts them by lead and time.
    events = [(lead, AS_OF - age, slot, pages, amount) for lead, age, slot, pages, amount in raw_events]
    assert list(spec.properties) == ["amount", "pages"]  # the spec's order, which the index's columns follow
    index = build_event_index(
        np.array([e[0] for e in events], dtype=np.int64),
        np.array([e[1] for e in events], dtype=np.int64),
        np.array([e[2] for e in events], dtype=np.int64),
        n_leads=N_LEADS,
        n_slots=len(TYPES) + 1,
        properties=np.array([[math.nan if v is None else v for v in (e[4], e[3])] for e in events], dtype=np.float64).reshape(len(events), 2),
    )
    leads = np.array([lead for lead, _ in snapshots], dtype=np.int64)
    as_of = np.array([AS_OF + shift for _, shift in snapshots], dtype=np.int64)
    matrix = behaviour_matrix(index, leads, as_of, np.array(created, dtype=np.int64)[leads], spec)
    names = spec.behaviour_features()
    assert matrix.shape == (len(snapshots), len(names))
    for i, (lead, _) in enumerate(snapshots):
        expected = _reference_row(events, lead, int(as_of[i]), created[lead], spec)
        assert set(expected) == set(names)
        got = dict(zip(names, matrix[i], strict=True))
        for name in names:
            # The reference adds the engagement terms in another order and with 0.5 ** x: equal to 1e-12.
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=0, err_msg=f"{name}, snapshot {i}")


def test_a_snapshot_of_a_lead_outside_the_index_is_refused() -> None:
    index = build_event_index(np.array([0]), np.array([AS_OF]), np.array([0]), n_leads=1, n_slots=len(TYPES) + 1)
    with pytest.raises(ValueError, match="lead code is outside"):
        behaviour_matrix(index, np.array([1]), np.array([AS_OF]), np.array([AS_OF]), FeatureSpec(email_column=None, interaction_types=TYPES))


def test_an_event_of_a_lead_outside_the_index_is_refused_naming_its_code() -> None:
    with pytest.raises(ValueError, match=r"lead codes \[2\] are outside 0..1"):
        build_event_index(np.array([0, 2]), np.array([AS_OF, AS_OF]), np.array([0, 0]), n_leads=2, n_slots=len(TYPES) + 1)


# --- the snapshots' lead codes ------------------------------------------------------------------


@pytest.mark.parametrize("id_dtype", ["str", object])
@pytest.mark.parametrize("lead_dtype", ["str", object])
@pytest.mark.parametrize("missing_lead", [False, True])
def test_snapshot_lead_positions_equal_pandas_look_up(id_dtype: object, lead_dtype: object, missing_lead: bool) -> None:
    # Arrow's look-up (both sides Arrow strings) against pandas', with unknown and missing ids,
    # ids repeated across chunks and a missing lead_id among the leads.
    rng = np.random.default_rng(4)
    lead_ids = [f"L{i}" for i in range(0, 60, 3)] + ([None] if missing_lead else [])
    lead_pos = pd.Index(pd.Series(lead_ids, dtype=lead_dtype))
    ids = [f"L{i}" for i in rng.integers(0, 60, 300)] + [None, "ghost"]
    column = pd.concat([pd.Series(ids, dtype=id_dtype)] * 2, ignore_index=True)
    expected = lead_pos.get_indexer(column)
    assert (expected >= 0).any() and (expected < 0).any()
    np.testing.assert_array_equal(_positions(column, lead_pos), expected)
