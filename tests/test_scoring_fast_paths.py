"""The one-lead path's short cuts equal what they replace: reading interactions, ranking the drivers of reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import engine as engine_module
from features import schema as schema_module
from features.engine import (
    FEW_ROWS,
    BehaviourPlan,
    FeatureRows,
    behaviour_matrix,
    build_event_index,
    counted_as,
    outside_vocabulary,
    type_slots,
)
from features.labels import driver_of
from features.schema import LeadSchema
from features.spec import FeatureSpec
from model.bundle import Calibration
from model.scoring import (
    InteractionIn,
    LeadColumns,
    LeadIn,
    LeadRejected,
    _headlines,
    _read_interactions,
    _read_interactions_one_by_one,
    columns_rows,
    past_scores,
    read_lead,
    rounded_each,
    rounded_probability,
)

SCHEMA = LeadSchema(type_map={"Email Opened": "email_open"}, split_types=["email_click"])
SPEC = FeatureSpec(categorical=[], numeric=[])
CREATED = datetime(2025, 3, 1, tzinfo=UTC)
CREATED_S = int(CREATED.timestamp())
AS_OF_S = CREATED_S + 40 * 86_400
# Kinds of type: mapped, split by channel, whitespace only (no type), outside the vocabulary.
TYPES = ["page_view", "Email Opened", "email_click", "   ", "chat_started", " demo_request "]
CHANNELS = [None, "web", "email", "  "]

events = st.lists(
    st.tuples(
        st.sampled_from(TYPES),
        st.sampled_from(CHANNELS),
        # From 5 days before creation (set aside as early) to 5 days after as_of (seen as future).
        st.integers(-5 * 86_400, 45 * 86_400),
    ),
    max_size=30,
)


def _interactions(drawn: list[tuple[str, str | None, int]]) -> list[InteractionIn]:
    return [
        InteractionIn(type=kind, channel=channel, occurred_at=(CREATED + timedelta(seconds=offset)).isoformat())
        for kind, channel, offset in drawn
    ]


@settings(max_examples=200, deadline=None)
@given(events)
def test_fast_reading_equals_the_event_by_event_one(drawn: list[tuple[str, str | None, int]]) -> None:
    interactions = _interactions(drawn)

    fast = _read_interactions(SCHEMA, SPEC, interactions, CREATED_S, AS_OF_S)
    slow = _read_interactions_one_by_one(SCHEMA, SPEC, interactions, CREATED_S, AS_OF_S)

    assert fast == slow
    assert fast.untyped == sum(kind.strip() == "" for kind, _c, _o in drawn)


def test_a_lead_with_a_naive_time_or_properties_is_read_event_by_event() -> None:
    naive = InteractionIn(type="page_view", occurred_at="2025-03-02T10:00:00")
    with_properties = InteractionIn(type="page_view", occurred_at="2025-03-02T10:00:00Z", properties={"pages": 4})

    read = _read_interactions(SCHEMA, SPEC, [naive, with_properties], CREATED_S, AS_OF_S)

    assert read.times == [CREATED_S + 86_400 + 36_000] * 2  # the naive time read in UTC, the schema's zone
    assert read.unused_properties == {"pages"}  # read, and found undeclared by this schema


def test_a_bad_time_is_refused_by_the_reading_that_takes_it() -> None:
    schema = LeadSchema(interaction_timezone=None)
    naive = InteractionIn(type="page_view", occurred_at="2025-03-02T10:00:00")

    with pytest.raises(LeadRejected) as refused:
        _read_interactions(schema, SPEC, [InteractionIn(type="page_view", occurred_at="2025-03-02T10:00:00Z"), naive], CREATED_S, AS_OF_S)

    assert refused.value.field == "interactions.1.occurred_at"


def _reasons_ranked_one_by_one(model, contrib_row: np.ndarray, top_k: int) -> list[tuple[str, float]]:
    # The ranking `ScoringModel.reasons` made before it summed with `np.bincount`: a dict in feature order, then a stable sort.
    per_driver: dict[str, float] = {}
    for driver, c in zip((driver_of(f, model.spec) for f in model.feature_names), contrib_row[:-1], strict=True):
        per_driver[driver] = per_driver.get(driver, 0.0) + float(c)
    ranked = sorted(per_driver.items(), key=lambda item: item[1])
    return [(d, v) for d, v in ranked[::-1][:top_k] if v > 0] + [(d, v) for d, v in ranked[:top_k] if v < 0]


def test_reasons_rank_drivers_as_adding_them_one_by_one(training_result) -> None:
    model = training_result.model
    rows = training_result.test.rows
    contributions = model.contributions(training_result.test.matrix[:300])
    # Rounded copies tie many drivers: ties must go the same way too.
    for contrib in (contributions, np.round(contributions, 1)):
        for i, row in enumerate(contrib):
            up, down = model.reasons(row, rows.row(i), top_k=5)
            assert [(r.driver, r.log_odds) for r in up + down] == _reasons_ranked_one_by_one(model, row, 5)


calibrations = st.one_of(
    st.builds(
        lambda a, b: Calibration(method="platt", a=a, b=b),
        st.floats(-3, 3, allow_nan=False),
        st.floats(-3, 3, allow_nan=False),
    ),
    st.builds(
        lambda knots, blend, a: Calibration(
            method="isotonic", x=sorted(knots), y=sorted(np.linspace(0.01, 0.99, len(knots)).tolist()), a=a, blend=blend
        ),
        st.lists(st.floats(-8, 8, allow_nan=False), min_size=2, max_size=12, unique=True),
        st.sampled_from([0.0, 0.05, 0.3]),
        st.floats(0.1, 3, allow_nan=False),
    ),
)


@settings(max_examples=300, deadline=None)
@given(calibrations, st.lists(st.floats(-30, 30, allow_nan=False), min_size=1, max_size=11))
def test_calibrating_a_few_scores_in_python_equals_numpy_to_the_bit(calibration: Calibration, raw: list[float]) -> None:
    assert calibration.apply_each(raw) == calibration.apply(np.array(raw)).tolist()


def test_a_row_read_from_the_behaviour_block_equals_the_row_read_column_by_column(training_result) -> None:
    columns = training_result.test.rows
    names = tuple(training_result.model.spec.behaviour_features())
    assert names and list(columns.numeric)[-len(names) :] == list(names)
    # The one-lead path's rows: the behaviour features as one block, `numeric` viewing its columns.
    block = np.column_stack([columns.numeric[k] for k in names])
    numeric = {k: v for k, v in columns.numeric.items() if k not in names} | {k: block[:, j] for j, k in enumerate(names)}
    rows = FeatureRows(columns.categorical, numeric, behaviour=block, behaviour_names=names)
    for i in range(0, len(block), 97):
        by_column = {k: v[i] for k, v in rows.categorical.items()} | {k: float(v[i]) for k, v in rows.numeric.items()}
        row = rows.row(i)
        assert list(row) == list(by_column)
        assert all(type(row[k]) is type(by_column[k]) for k in row)
        # The same values, a missing number (NaN) where the column has one.
        assert all(row[k] == by_column[k] or (row[k] != row[k] and by_column[k] != by_column[k]) for k in row)


def test_the_answers_of_reasons_are_the_reasons_as_dicts(training_result) -> None:
    model = training_result.model
    rows = training_result.test.rows
    contributions = model.contributions(training_result.test.matrix[:200])
    for language in ("en", "fr"):
        for i, row in enumerate(contributions):
            values = rows.row(i)
            up, down = model.reasons(row, values, top_k=5, language=language)
            assert model.reason_answers(row, values, top_k=5, language=language) == (
                [r.to_dict() for r in up],
                [r.to_dict() for r in down],
            )


def _ranked_one_by_one(model, contrib_row: np.ndarray, top_k: int) -> tuple[list[int], list[int], list[float], list[float]]:
    # The ranking of one lead as `ranked_drivers` made it before batches were ranked at once.
    raw_total = float(contrib_row.sum())
    sums = np.bincount(model.driver_of_column, weights=contrib_row[:-1], minlength=len(model.drivers))
    driver_sums = sums.tolist()
    ranked = np.argsort(sums, kind="stable").tolist()
    up = [j for j in ranked[::-1][:top_k] if driver_sums[j] > 0]
    down = [j for j in ranked[:top_k] if driver_sums[j] < 0]
    if not up and not down:
        return [], [], [], []
    log_odds = [driver_sums[j] for j in up + down]
    p_full, *without = model.meta.calibration.apply_each([raw_total, *[raw_total - x for x in log_odds]])
    return up, down, log_odds, [100.0 * (p_full - p) for p in without]


@pytest.mark.parametrize("top_k", [1, 3, 5])
def test_ranking_a_batch_at_once_equals_ranking_each_lead(training_result, top_k: int) -> None:
    model = training_result.model
    contributions = model.contributions(training_result.test.matrix[:300])
    contributions[7, :-1] = 0.0  # a lead no driver moves: no reasons
    expected = [_ranked_one_by_one(model, row, top_k) for row in contributions]
    for got in (model.ranked_drivers_of(contributions, top_k), [model.ranked_drivers(row, top_k) for row in contributions]):
        assert [tuple(r) for r in got] == expected  # the same drivers and floats, to the bit
    assert expected[7] == ([], [], [], [])


# Probabilities near the 6th decimal's half-way points, where a rounding that differs shows first.
halfway = st.integers(0, 10**6 - 1).map(lambda k: (k + 0.5) / 1e6)
probabilities = st.one_of(st.floats(0, 1, allow_nan=False), halfway, st.just(float("nan")))


@settings(max_examples=500, deadline=None)
@given(st.lists(probabilities, min_size=1, max_size=11))
def test_rounding_a_few_probabilities_in_python_equals_numpy_to_the_bit(probability: list[float]) -> None:
    numpy = rounded_probability(np.array(probability)).tolist()
    python = rounded_each(probability)
    assert [(p != p, p if p == p else 0.0) for p in python] == [(p != p, p if p == p else 0.0) for p in numpy]


def test_rounding_in_python_and_numpy_agree_on_every_half_way_point_of_a_range() -> None:
    # 200,000 probabilities exactly between two answers (as written in binary): every tie is broken alike.
    probability = ((np.arange(200_000) + 0.5) / 1e6).tolist()
    assert rounded_each(probability) == rounded_probability(np.array(probability)).tolist()


def test_placing_a_few_probabilities_in_python_equals_numpy(training_result) -> None:
    model = training_result.model
    quantiles = list(model.meta.score_quantiles)
    # Each quantile itself, its neighbours by one ulp, the ends and beyond them, and NaN.
    edges = [q for v in quantiles for q in (v, np.nextafter(v, -1.0), np.nextafter(v, 2.0))]
    probability = [*edges, 0.0, 1.0, -0.5, 1.5, float("nan"), *np.random.default_rng(3).random(500).tolist()]
    assert model.score_0_100_each(probability) == model.score_0_100(np.array(probability)).tolist()


def test_headlines_and_past_scores_of_a_few_rows_equal_those_of_many(training_result) -> None:
    model = training_result.model
    raw = model.raw(training_result.test.matrix[:600])
    many = _headlines(model, raw)  # over `FEW_ROWS`: numpy
    for start in range(0, 600, FEW_ROWS):
        assert _headlines(model, raw[start : start + FEW_ROWS]) == many[start : start + FEW_ROWS]
    if model.meta.trend is None:
        pytest.skip("the simulated bundle has no trend")
    # Two leads, two past instants: 4 rows, some leads too young to have existed 7 or 30 days before.
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, FEW_ROWS // 2 + 1))
        as_of_s = rng.integers(1_700_000_000, 1_800_000_000, n)
        created_s = as_of_s - rng.integers(0, 40 * 86_400, n)
        past = raw[rng.integers(0, 600, 2 * n)]
        few = past_scores(model, past, created_s, as_of_s)
        # The numpy path: the same rows padded past `FEW_ROWS` with copies, then cut back.
        pad = FEW_ROWS + 1
        padded_past = np.concatenate([past[:n], np.repeat(past[:1], pad), past[n:], np.repeat(past[n : n + 1], pad)])
        padded = past_scores(
            model, padded_past, np.concatenate([created_s, np.repeat(created_s[:1], pad)]),
            np.concatenate([as_of_s, np.repeat(as_of_s[:1], pad)]),
        )  # fmt: skip
        assert few.dtype == padded.dtype
        assert few.tolist() == padded[:, :n].tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 3), st.floats(-5, 5)), max_size=40))
def test_one_leads_event_index_equals_the_general_one(events: list[tuple[int, int, float]]) -> None:
    # Unsorted times with ties: the one-lead index orders them as the general index does (stably by time).
    times = np.array([t for t, _s, _v in events], dtype=np.int64)
    slots = np.array([s for _t, s, _v in events], dtype=np.int64)
    values = np.array([[v] for _t, _s, v in events], dtype=np.float64).reshape(len(events), 1)
    codes = np.zeros(len(events), dtype=np.int64)
    one = build_event_index(codes, times, slots, n_leads=1, n_slots=4, properties=values)
    general = build_event_index(codes, times, slots, n_leads=2, n_slots=4, properties=values)  # a second lead, empty
    assert one.lead_start.tolist() == general.lead_start[:2].tolist()
    for name in ("time_s", "slot", "properties"):
        assert np.array_equal(getattr(one, name), getattr(general, name)), name
        assert getattr(one, name).flags.c_contiguous


def test_a_kept_behaviour_plan_gives_the_matrix_of_the_spec(training_result, simulated_dataset) -> None:
    spec = training_result.model.spec
    index = build_event_index(np.zeros(5, dtype=np.int64), np.arange(5) * 86_400, np.arange(5) % 3, 1, len(spec.interaction_types) + 1)
    leads, as_of, created = np.zeros(3, dtype=np.int64), np.array([9, 3, 30]) * 86_400, np.zeros(3, dtype=np.int64)
    planned = behaviour_matrix(index, leads, as_of, created, spec, BehaviourPlan.of(spec))
    assert np.array_equal(planned, behaviour_matrix(index, leads, as_of, created, spec), equal_nan=True)
    assert BehaviourPlan.of(spec).names == tuple(spec.behaviour_features())


def test_the_rows_of_a_few_leads_equal_their_rows_among_many(training_result, simulated_dataset) -> None:
    # Up to `FEW_ROWS` leads, the snapshots' columns are built in Python; beyond, in numpy.
    model, data = training_result.model, simulated_dataset
    as_of = data.data_end - pd.Timedelta(days=100)
    leads = data.leads[data.leads["created_at"] <= as_of].sample(3 * FEW_ROWS, random_state=4)
    by_lead = dict(tuple(data.interactions.groupby("lead_id")))
    columns = model.spec.attribute_columns()
    reads = []
    for _, lead in leads.iterrows():
        events = by_lead.get(lead["lead_id"], data.interactions.iloc[:0])
        body = {
            "lead_id": lead["lead_id"], "created_at": lead["created_at"],
            "attributes": {c: (None if lead[c] != lead[c] else lead[c]) for c in columns},
            "interactions": [{"type": t, "occurred_at": o} for t, o in zip(events["type"], events["occurred_at"], strict=True)],
        }  # fmt: skip
        reads.append(read_lead(model, LeadIn.model_validate(body), as_of.to_pydatetime()))
    many = columns_rows(LeadColumns.of(reads, model.spec), model.spec, with_past=True, plan=model.behaviour_plan)
    n = len(reads)
    for start in range(0, n, 3):
        few_reads = reads[start : start + 3]
        few = columns_rows(LeadColumns.of(few_reads, model.spec), model.spec, with_past=True, plan=model.behaviour_plan)
        for block in range(3):  # now, 7 and 30 days before
            for i in range(len(few_reads)):
                expected, got = many.row(block * n + start + i), few.row(block * len(few_reads) + i)
                assert list(got) == list(expected)
                assert all(got[k] == expected[k] or (got[k] != got[k] and expected[k] != expected[k]) for k in got)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TYPES + ["email_click__web", "webinar"]), st.sampled_from(CHANNELS)), max_size=20))
def test_remembered_type_readings_equal_reading_each_pair(pairs: list[tuple[str, str | None]]) -> None:
    schema = LeadSchema(type_map={"Email Opened": "email_open"}, split_types=["email_click"])
    expected = {pair: schema.interaction_type(*pair) for pair in pairs}
    assert schema.interaction_types_of(set(pairs)) == expected
    assert schema.interaction_types_of(set(pairs)) == expected  # the second time from the memo


def test_the_memo_of_type_readings_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema_module, "TYPE_MEMO_SIZE", 5)
    schema = LeadSchema(split_types=["email_click"])
    pairs = [(f"type_{i}", None) for i in range(50)] + [("email_click", f"channel {i}") for i in range(50)]
    assert schema.interaction_types_of(pairs) == {pair: schema.interaction_type(*pair) for pair in pairs}
    assert len(schema._type_memo) == 5
    # Past the bound a pair is read every time, with the same answer.
    assert schema.interaction_types_of(pairs[-3:]) == {pair: schema.interaction_type(*pair) for pair in pairs[-3:]}


def test_the_types_outside_the_vocabulary_are_those_counted_as_other() -> None:
    spec = FeatureSpec(categorical=[], numeric=[], interaction_types=["page_view", "email_click", "email_click__web"])
    types = ["page_view", "email_click__web", "email_click__rare", "webinar", "chat", "", "page_view__x"]
    assert outside_vocabulary(set(types), spec) == sorted(t for t in set(types) if counted_as(t, spec) is None)
    # A split type counts as its listed base: page_view__x and email_click__rare are inside.
    assert outside_vocabulary(set(types), spec) == ["", "chat", "webinar"]


def test_remembered_type_slots_equal_looking_each_type_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "SLOT_MEMO_SIZE", 5)
    # A vocabulary of its own: a memo another test filled does not answer for it.
    spec = FeatureSpec(categorical=[], numeric=[], interaction_types=["page_view", "email_click", "demo_request", "memo_test"])
    other = len(spec.interaction_types)
    types = ["page_view", "email_click__web", "chat", "demo_request"] + [f"made_up_{i}" for i in range(50)] + ["page_view"]
    expected = [spec.interaction_types.index(b) if (b := counted_as(t, spec)) is not None else other for t in types]
    assert type_slots(types, spec).tolist() == expected
    assert type_slots(types, spec).tolist() == expected  # the second time the first five from the memo
    assert type_slots(np.array(types, dtype=object), spec).tolist() == expected
    assert len(engine_module._slot_memo(tuple(spec.interaction_types))) == 5  # made-up types do not grow it
    assert outside_vocabulary(set(types), spec) == sorted(t for t in set(types) if counted_as(t, spec) is None)


def test_encoding_a_few_rows_equals_encoding_them_among_many(training_result) -> None:
    model, rows = training_result.model, training_result.test.rows
    many = model.encode(rows)  # over the few rows' threshold: column by column
    n = len(many)
    for start in range(0, min(n, 400), 7):
        stop = min(start + 7, n)
        few = FeatureRows(
            {k: v[start:stop] for k, v in rows.categorical.items()},
            {k: v[start:stop] for k, v in rows.numeric.items()},
            behaviour=None if rows.behaviour is None else rows.behaviour[start:stop],
            behaviour_names=rows.behaviour_names,
        )
        assert np.array_equal(model.encode(few), many[start:stop], equal_nan=True)
    # Unseen and missing categories: NaN, as among many rows.
    odd = FeatureRows({k: np.array(["never seen", None] + list(v[:5]), dtype=object) for k, v in rows.categorical.items()},
                      {k: v[:7] for k, v in rows.numeric.items()})
    padded = FeatureRows({k: np.concatenate([v, v, v]) for k, v in odd.categorical.items()},
                         {k: np.concatenate([v, v, v]) for k, v in odd.numeric.items()})
    assert np.array_equal(model.encode(odd), model.encode(padded)[:7], equal_nan=True)
