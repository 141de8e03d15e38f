"""The one definition of every behavioural and attribute feature.

Both executors of the project go through `behaviour_matrix`:
- training builds many leads x many snapshot times at once (`snapshot_features`);
- serving builds one lead, now (`lead_features`).

Events are sorted by lead and time once (`build_event_index`); a compiled kernel then visits,
per snapshot, the events of its lead up to `as_of` once, in time order, and writes every
behavioural feature of that snapshot. One lead costs microseconds, a million leads cost
seconds, and a lead's values never depend on another lead's rows: the functions can run per
partition of leads on a cluster, and a lead scored alone gets the bits it gets in a batch.

Time is whole seconds since the Unix epoch, UTC. An event at exactly `as_of` is seen by the
snapshot; anything later is not. Event properties (`FeatureSpec.properties`: numbers an event
carries, e.g. the pages of a web session) are summed and maxed over the same windows, from the
same seen events as the counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.email import email_domain_kind
from features.spec import FeatureSpec
from features.threads import run_ranges
from features.vocabulary import EMAIL_DOMAIN_KIND, remembered, split_base

SECONDS_PER_DAY = 86_400
# Up to this many rows (a lead now and at its past instants, or a few leads), the scoring path
# computes in Python lists and floats: numpy's fixed cost per call is more than the arithmetic of
# so few values, which give the same bits either way (`tests/test_scoring_fast_paths.py`).
FEW_ROWS = 8
ACTIVE_RECENT_S = 30 * SECONDS_PER_DAY  # the window of `active_days_30d`

@dataclass(frozen=True)
class EventIndex:
    """Interactions of a set of leads, sorted by lead then time, for point-in-time queries.

    Attributes:
        n_leads: Number of leads (lead codes are 0..n_leads-1).
        n_slots: Number of type slots: the known vocabulary plus one "other" slot.
        lead_start: int64 (n_leads + 1): the events of lead i are i's range
            lead_start[i]..lead_start[i + 1] - 1 of the arrays below.
        time_s: int64 event times (epoch seconds), time-sorted within each lead.
        slot: int64 type slot of each event.
        properties: float64 (n_events, n_properties), C-ordered: each event's property values
            (NaN when it has none), properties in `FeatureSpec.properties` order.
    """

    n_leads: int
    n_slots: int
    lead_start: np.ndarray
    time_s: np.ndarray
    slot: np.ndarray
    properties: np.ndarray


def build_event_index(
    lead_codes: np.ndarray,
    times_s: np.ndarray,
    type_slots: np.ndarray,
    n_leads: int,
    n_slots: int,
    properties: np.ndarray | None = None,
) -> EventIndex:
    """Encode events for point-in-time queries.

    Args:
        lead_codes: Lead code (0..n_leads-1) of each event.
        times_s: Event time in epoch seconds.
        type_slots: Type slot of each event (vocabulary position, or n_slots-1 for other types).
        n_leads: Number of leads.
        n_slots: Vocabulary size plus one.
        properties: float64 (n_events, n_properties) property values of each event (NaN when
            missing); None when the spec has no properties.

    Returns:
        The index. Events of one lead at the same second keep their input order.

    Raises:
        ValueError: A lead code is outside 0..n_leads-1.
    """
    lead_codes = np.asarray(lead_codes, dtype=np.int64)
    values = np.empty((lead_codes.size, 0)) if properties is None else np.asarray(properties, dtype=np.float64)
    times_s = np.asarray(times_s, dtype=np.int64)
    type_slots = np.asarray(type_slots, dtype=np.int64)
    if n_leads == 1 and not lead_codes.any():
        # One lead (a request): its events ordered by time alone, stably, as the sort below orders them.
        if times_s.size > 1 and (times_s[1:] < times_s[:-1]).any():
            order = np.argsort(times_s, kind="stable")
            times_s, type_slots, values = times_s[order], type_slots[order], values[order]
        lead_start = np.array([0, times_s.size], dtype=np.int64)
    else:
        if lead_codes.size > 1:
            lead_step = lead_codes[1:] - lead_codes[:-1]
            unsorted = (lead_step < 0) | ((lead_step == 0) & (times_s[1:] < times_s[:-1]))
            if unsorted.any():
                # Stable: events of a lead at the same second keep their order, so the engagement
                # sum adds them in the same order on every path.
                order = np.lexsort((times_s, lead_codes))
                lead_codes, times_s, type_slots, values = lead_codes[order], times_s[order], type_slots[order], values[order]
            # Validated interactions come sorted by lead and time: nothing to reorder.
        if lead_codes.size and (lead_codes[0] < 0 or lead_codes[-1] >= n_leads):
            bad = lead_codes[(lead_codes < 0) | (lead_codes >= n_leads)]
            raise ValueError(f"build_event_index: lead codes {bad[:5].tolist()} are outside 0..{n_leads - 1}")
        lead_start = np.zeros(n_leads + 1, dtype=np.int64)
        np.cumsum(np.bincount(lead_codes, minlength=n_leads), out=lead_start[1:])
    return EventIndex(
        n_leads=n_leads,
        n_slots=n_slots,
        lead_start=lead_start,
        time_s=np.ascontiguousarray(times_s),
        slot=np.ascontiguousarray(type_slots),
        properties=np.ascontiguousarray(values),
    )


@dataclass(frozen=True)
class BehaviourPlan:
    """What `behaviour_matrix` and `assemble_rows` read of a spec, worked out once.

    A loaded model keeps its plan (`model.bundle.ScoringModel.behaviour_plan`), so that scoring
    one lead does not rebuild the names, weights and windows on every request; elsewhere both
    functions make one from the spec they are given (a `FeatureSpec` can change, a plan cannot).

    Attributes:
        names: `spec.behaviour_features()`.
        weights: Engagement weight of each vocabulary type, then 0 for the other slot.
        windows_s: The count windows in seconds, ascending.
        halflife_s: The engagement half-life in seconds.
        never_seen: `days_since_<type>` of a type never seen (NaN when the spec gives none).
        property_columns, is_max: Per property feature, its property's column and whether it is a maximum (else a sum).
    """

    names: tuple[str, ...]
    weights: np.ndarray
    windows_s: np.ndarray
    halflife_s: float
    never_seen: float
    property_columns: np.ndarray
    is_max: np.ndarray

    @classmethod
    def of(cls, spec: FeatureSpec) -> BehaviourPlan:
        aggregates = [(p, a) for p, (_, wanted) in enumerate(spec.properties.items()) for a in wanted]
        return cls(
            names=tuple(spec.behaviour_features()),
            weights=np.array([engagement_weight(t, spec) for t in spec.interaction_types] + [0.0]),
            windows_s=np.asarray(spec.windows_days, dtype=np.int64) * SECONDS_PER_DAY,
            halflife_s=spec.halflife_days * SECONDS_PER_DAY,
            never_seen=np.nan if spec.never_seen_days is None else float(spec.never_seen_days),
            property_columns=np.array([p for p, _ in aggregates], dtype=np.int64),
            is_max=np.array([a == "max" for _, a in aggregates], dtype=np.bool_),
        )


def behaviour_matrix(
    index: EventIndex,
    snap_lead: np.ndarray,
    snap_as_of_s: np.ndarray,
    snap_created_s: np.ndarray,
    spec: FeatureSpec,
    plan: BehaviourPlan | None = None,
) -> np.ndarray:
    """Behavioural features of each snapshot, in `spec.behaviour_features()` order.

    A snapshot sees its lead's events at or before `as_of`. Per type slot and window, the
    counts hold the events younger than the window (one at exactly as_of - window is out);
    `days_since_<type>` is the age of the type's last seen event (`spec.never_seen_days`, else
    NaN, when there is none); the engagement is the sum of weight(type) * 0.5 ** (age /
    half-life) over the seen events in time order; active days are the distinct UTC days of the
    seen events, in total and younger than 30 days; property sums (0 without a value) and
    maxima (NaN without one) use the same windows over the seen events carrying a value.

    Args:
        index: The leads' events.
        snap_lead: Lead code of each snapshot.
        snap_as_of_s: Snapshot time (epoch seconds); only events at or before it are seen.
        snap_created_s: Creation time of the snapshot's lead (epoch seconds).
        spec: Which windows, types and weights.
        plan: `BehaviourPlan.of(spec)`, when the caller keeps it; made here when None.

    Returns:
        float64 array of shape (n_snapshots, len(spec.behaviour_features())).

    Raises:
        ValueError: A snapshot's lead code is outside the index's leads.
    """
    snap_lead = np.ascontiguousarray(snap_lead, dtype=np.int64)
    as_of = np.ascontiguousarray(snap_as_of_s, dtype=np.int64)
    created = np.ascontiguousarray(snap_created_s, dtype=np.int64)
    n_snap = snap_lead.size
    if not spec.interactions:  # a static spec has no behaviour block
        return np.empty((n_snap, 0), dtype=np.float64)
    if not spec.events:  # no interaction in the data: the lead's age is the whole block
        return ((as_of - created) / SECONDS_PER_DAY).astype(np.float64)[:, None]
    plan = BehaviourPlan.of(spec) if plan is None else plan
    n_types = len(spec.interaction_types)
    out = np.empty((n_snap, len(plan.names)), dtype=np.float64)
    kernel = _compiled_behaviour_kernel()
    weights = plan.weights if index.n_slots == n_types + 1 else np.append(plan.weights[:n_types], [0.0] * (index.n_slots - n_types))

    def snapshots(start: int, stop: int) -> None:
        # Each snapshot is computed on its own: ranges of them in threads give the values of one call.
        kernel(index.lead_start, index.time_s, index.slot, index.properties, snap_lead[start:stop], as_of[start:stop],
               created[start:stop], weights, plan.halflife_s, plan.windows_s, n_types, plan.never_seen,
               plan.property_columns, plan.is_max, out[start:stop])  # fmt: skip

    run_ranges(snapshots, n_snap)
    return out


@lru_cache(maxsize=1)
def _compiled_behaviour_kernel() -> Callable[..., None]:
    """`_behaviour_kernel` compiled to machine code, once per process.

    numba is imported here, not with this module, and the machine code is cached on disk
    (NUMBA_CACHE_DIR, else __pycache__): a process loads it instead of compiling it. The first
    call costs that load (under a second); serving pays it at start-up, whose bundle check
    scores the smoke lead before any request.
    """
    import numba

    return cast(Callable[..., None], numba.njit(cache=True, nogil=True)(_behaviour_kernel))


def _behaviour_kernel(
    lead_start: np.ndarray,
    time_s: np.ndarray,
    slot: np.ndarray,
    properties: np.ndarray,
    snap_lead: np.ndarray,
    as_of_s: np.ndarray,
    created_s: np.ndarray,
    weights: np.ndarray,
    halflife_s: float,
    windows_s: np.ndarray,
    n_types: int,
    never_days: float,
    aggregate_property: np.ndarray,
    aggregate_is_max: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write each snapshot's row of `behaviour_matrix` into `out`, in one pass over the events it sees.

    Per seen event, its bucket is the number of windows it is not younger than (0: inside every
    window; len(windows_s): outside all); a window's count or sum is that of the buckets
    before it, and the total that of all buckets.

    Args:
        lead_start, time_s, slot, properties: The `EventIndex` arrays.
        snap_lead, as_of_s, created_s: Lead code, snapshot time and lead creation time of each snapshot.
        weights: Engagement weight per type slot.
        halflife_s: Engagement half-life, seconds.
        windows_s: The windows, seconds, ascending.
        n_types: Vocabulary size (slots 0..n_types-1; slot n_types counts other events).
        never_days: `days_since_<type>` of a type not seen.
        aggregate_property, aggregate_is_max: Per property feature block, its property column
            and whether it is a maximum (else a sum).
        out: float64 (n_snapshots, n_features), written row by row.
    """
    n_slots = weights.size
    n_win = windows_s.size
    n_aggregates = aggregate_property.size
    counts = np.zeros((n_slots, n_win + 1), dtype=np.int64)
    last_s = np.zeros(n_slots, dtype=np.int64)
    buckets = np.zeros((n_aggregates, n_win + 1), dtype=np.float64)
    tail = n_types * (n_win + 2)
    for s in range(snap_lead.size):
        lead = snap_lead[s]
        if lead < 0 or lead >= lead_start.size - 1:
            raise ValueError("behaviour_matrix: a snapshot's lead code is outside the event index's leads")
        as_of = as_of_s[s]
        counts[:, :] = 0
        for k in range(n_aggregates):
            # Sums start at 0 (nothing seen adds nothing), maxima at -inf (NaN at the end).
            buckets[k, :] = -np.inf if aggregate_is_max[k] else 0.0
        engagement = 0.0
        active_total = 0
        active_recent = 0
        previous_day = 0
        previous_recent_day = 0
        for e in range(lead_start[lead], lead_start[lead + 1]):
            t = time_s[e]
            if t > as_of:  # time-sorted: every later event of the lead is unseen too
                break
            age = as_of - t
            event_slot = slot[e]
            engagement += weights[event_slot] * np.exp2(-(age / halflife_s))
            bucket = 0
            while bucket < n_win and windows_s[bucket] <= age:
                bucket += 1
            counts[event_slot, bucket] += 1
            last_s[event_slot] = t
            day = t // SECONDS_PER_DAY
            if active_total == 0 or day != previous_day:
                active_total += 1
                previous_day = day
            if age < ACTIVE_RECENT_S and (active_recent == 0 or day != previous_recent_day):
                active_recent += 1
                previous_recent_day = day
            for k in range(n_aggregates):
                value = properties[e, aggregate_property[k]]
                if not math.isnan(value):
                    if aggregate_is_max[k]:
                        if value > buckets[k, bucket]:
                            buckets[k, bucket] = value
                    else:
                        buckets[k, bucket] += value
        events_total = 0
        for type_slot in range(n_types):
            column = type_slot * (n_win + 2)
            seen = 0
            for w in range(n_win):
                seen += counts[type_slot, w]
                out[s, column + w] = seen
            seen += counts[type_slot, n_win]
            out[s, column + n_win] = seen
            out[s, column + n_win + 1] = (as_of - last_s[type_slot]) / SECONDS_PER_DAY if seen > 0 else never_days
            events_total += seen
        other_total = 0
        for b in range(n_win + 1):
            other_total += counts[n_types, b]
        out[s, tail] = events_total
        out[s, tail + 1] = other_total
        out[s, tail + 2] = engagement
        out[s, tail + 3] = active_recent
        out[s, tail + 4] = active_total
        out[s, tail + 5] = (as_of - created_s[s]) / SECONDS_PER_DAY
        column = tail + 6
        for k in range(n_aggregates):
            running = buckets[k, 0]
            for b in range(n_win + 1):
                if b > 0:
                    if aggregate_is_max[k]:
                        if buckets[k, b] > running:
                            running = buckets[k, b]
                    else:
                        running += buckets[k, b]
                out[s, column + b] = np.nan if running == -np.inf else running
            column += n_win + 1


def engagement_weight(event_type: str, spec: FeatureSpec) -> float:
    """Weight of a vocabulary type in the engagement score: its own, else its split base's, else 0.

    A split type ("email_click__newsletter") weighs what its type weighs unless the spec gives
    it a weight of its own: splitting a type must not change the engagement score.
    """
    if event_type in spec.engagement_weights:
        return spec.engagement_weights[event_type]
    base = split_base(event_type)
    return spec.engagement_weights.get(base, 0.0) if base is not None else 0.0


@dataclass(frozen=True)
class FeatureRows:
    """Feature values for a set of snapshots, before encoding for a model.

    Attributes:
        categorical: Column name -> object array of str or None.
        numeric: Column name -> float64 array (attribute numbers and behaviour features).
        category_codes: For some categorical columns, the same values as (codes, distinct):
            `categorical[name]` is `distinct[codes]`. `snapshot_features` gives them (the
            distinct values of the leads, the codes of each snapshot's lead), so encoding a
            batch looks each distinct value up once instead of hashing every row's text
            (`model.bundle.encode_matrix`). Empty elsewhere; a FeatureRows built from another
            one's columns leaves them out, which only costs that speed.
        behaviour: The behaviour features as one float64 (n, k) block, when `numeric` holds
            its columns under `behaviour_names` (`snapshot_features`, `assemble_rows`): the
            model matrix ends with them, and encoding copies the block at once.
        behaviour_names: The names of `behaviour`'s columns, in order; () without a block.
    """

    categorical: dict[str, np.ndarray]
    numeric: dict[str, np.ndarray]
    category_codes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    behaviour: np.ndarray | None = None
    behaviour_names: tuple[str, ...] = ()

    def to_frame(self, spec: FeatureSpec) -> pd.DataFrame:
        """All features as a DataFrame in `spec.feature_names()` order (categories as object)."""
        columns: dict[str, np.ndarray] = {**self.categorical, **self.numeric}
        return pd.DataFrame({name: columns[name] for name in spec.feature_names()})

    def row(self, i: int) -> dict[str, object]:
        """One snapshot's features as a plain dict (for grids and reasons)."""
        values: dict[str, object] = {k: v[i] for k, v in self.categorical.items()}
        before_block = self._numbers_before_behaviour
        if before_block is None:
            values.update({k: float(v[i]) for k, v in self.numeric.items()})
            return values
        # The behaviour block's row as floats at once: a lead has dozens of behaviour features.
        values.update({k: float(self.numeric[k][i]) for k in before_block})
        values.update(zip(self.behaviour_names, cast(np.ndarray, self.behaviour)[i].tolist(), strict=True))
        return values

    @cached_property
    def _numbers_before_behaviour(self) -> list[str] | None:
        # The numeric columns ahead of the behaviour block's, when `numeric` ends with the block's
        # columns in its order (`row` then reads them from the block); None otherwise.
        names, k = list(self.numeric), len(self.behaviour_names)
        if self.behaviour is None or k == 0 or tuple(names[len(names) - k :]) != self.behaviour_names:
            return None
        return names[: len(names) - k]

    def row_view(self, i: int) -> Mapping[str, object]:
        """One snapshot's features as a read-only mapping: `row(i)`'s values, each read when asked.

        For phrasing one reason per lead of a large batch, which reads a few of the features.
        """
        return _RowView(self, i)


class _RowView(Mapping[str, object]):
    """`FeatureRows.row(i)` without building it: categories as stored, numbers as float."""

    __slots__ = ("_i", "_rows")

    def __init__(self, rows: FeatureRows, i: int) -> None:
        self._rows, self._i = rows, i

    def __getitem__(self, name: str) -> object:
        if name in self._rows.categorical:
            return self._rows.categorical[name][self._i]
        return float(self._rows.numeric[name][self._i])

    def __iter__(self) -> Iterator[str]:
        yield from self._rows.categorical
        yield from self._rows.numeric

    def __len__(self) -> int:
        return len(self._rows.categorical) + len(self._rows.numeric)


def _category_values(values: Sequence[object] | np.ndarray) -> np.ndarray:
    # A category is its text; missing stays None (never the string "nan").
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if type(v) is str:  # the common value, its own text
            out[i] = v
        elif v is None or (isinstance(v, float) and v != v) or v is pd.NA:
            out[i] = None
        else:
            out[i] = str(v)
    return out


def _numeric_values(values: Sequence[object] | np.ndarray) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        out[i] = np.nan if v is None or v is pd.NA else float(v)
    return out


def _email_kinds(values: Sequence[object] | np.ndarray) -> np.ndarray:
    return np.array([email_domain_kind(v) for v in values], dtype=object)


def _by_distinct_value(
    column: pd.Series, convert: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    codes, distinct = _distinct_converted(column, convert)
    return distinct[codes]


def _distinct_converted(
    column: pd.Series, convert: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    # A rule applied once per distinct value (a CRM column has few), then spread by code: the
    # same values as `convert(column)` without a Python call per row. Missing values get
    # pd.factorize's code -1, which picks the `None` appended last. Returns (codes, converted
    # distinct values): the column's values are `distinct[codes]`, each distinct value once
    # (an email column's many addresses give a few domain kinds).
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    converted = convert(np.append(np.asarray(uniques, dtype=object), np.array([None], dtype=object)))
    again, distinct = pd.factorize(converted, use_na_sentinel=True)  # None: -1
    distinct = np.append(np.asarray(distinct, dtype=object), np.array([None], dtype=object))
    again = np.where(again < 0, len(distinct) - 1, again)
    return again[codes], distinct


def _numeric_column(column: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    return _by_distinct_value(column, _numeric_values)


def lead_attribute_rows(leads: pd.DataFrame, spec: FeatureSpec) -> FeatureRows:
    """Attribute features of every lead (no behaviour): the batch form of `assemble_rows`.

    Args:
        leads: One row per lead with the columns `spec.attribute_columns()`.
        spec: Feature specification.

    Returns:
        `FeatureRows` in the order of `leads`, with the categorical features and the numeric
        attributes only.
    """
    codes = {c: _distinct_converted(leads[c], _category_values) for c in spec.categorical}
    if spec.email_column:
        codes[EMAIL_DOMAIN_KIND] = _distinct_converted(leads[spec.email_column], _email_kinds)
    categorical = {c: distinct[code] for c, (code, distinct) in codes.items()}
    numeric = {c: _numeric_column(leads[c]) for c in spec.numeric}
    return FeatureRows(categorical=categorical, numeric=numeric, category_codes=codes)


def assemble_rows(
    spec: FeatureSpec,
    attributes: Mapping[str, Sequence[object] | np.ndarray],
    behaviour: np.ndarray,
    repeats: int = 1,
    plan: BehaviourPlan | None = None,
) -> FeatureRows:
    """Combine per-snapshot attribute values and the behaviour matrix into `FeatureRows`.

    Args:
        spec: Feature specification.
        attributes: Column -> value per snapshot, for every column in `spec.attribute_columns()`.
        behaviour: Output of `behaviour_matrix` for the same snapshots.
        repeats: The snapshots are `repeats` blocks of the same leads (a lead now, then at past
            instants): `attributes` holds one block, converted once and repeated.
        plan: The spec's `BehaviourPlan`, when the caller keeps it (its names are read).
    """
    categorical = {c: _category_values(attributes[c]) for c in spec.categorical}
    if spec.email_column:
        categorical[EMAIL_DOMAIN_KIND] = _email_kinds(attributes[spec.email_column])
    numeric = {c: _numeric_values(attributes[c]) for c in spec.numeric}
    if repeats != 1:
        # Each value's conversion alone: repeating the converted block gives the same rows. One
        # index array takes every column's repeats (np.tile costs microseconds a column).
        block = len(behaviour) // repeats
        repeated = np.array(list(range(block)) * repeats, dtype=np.intp) if block <= FEW_ROWS else np.tile(np.arange(block, dtype=np.intp), repeats)
        categorical = {c: v[repeated] for c, v in categorical.items()}
        numeric = {c: v[repeated] for c, v in numeric.items()}
    names = tuple(spec.behaviour_features()) if plan is None else plan.names
    numeric.update(zip(names, behaviour.T, strict=True))  # column j of the block is behaviour[:, j]
    return FeatureRows(categorical=categorical, numeric=numeric, behaviour=behaviour, behaviour_names=names)


def to_epoch_seconds(values: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """UTC timestamps to whole epoch seconds (truncated), as int64."""
    stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return stamps.as_unit("s").asi8.astype(np.int64)


def type_slots(types: Sequence[str] | np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Vocabulary position of each interaction type (`counted_as`); others go to the last ("other") slot."""
    if isinstance(types, np.ndarray):
        types = types.tolist()
    slots = _slot_memo(tuple(spec.interaction_types))
    try:  # the types a served model sees again and again: each event's slot in C
        return np.array(list(map(slots.__getitem__, types)), dtype=np.int64)
    except KeyError:
        slot_of = _slots_of(set(types), spec)
        return np.array(list(map(slot_of.__getitem__, types)), dtype=np.int64)


def outside_vocabulary(types: Iterable[str], spec: FeatureSpec) -> list[str]:
    """The types among `types` that count as other events (`counted_as` is None), sorted."""
    other = len(spec.interaction_types)
    return sorted(cast(str, t) for t, slot in _slots_of(types, spec).items() if slot == other)


SLOT_MEMO_SIZE = 4_096
"""Distinct interaction types whose slot is remembered per vocabulary (`type_slots`); any later one is looked up every time."""


def _slots_of(types: Iterable[object], spec: FeatureSpec) -> dict[object, int]:
    """The slot of each of `types` (`type_slots`), the first `SLOT_MEMO_SIZE` distinct ones remembered per vocabulary.

    A client sending made-up types cannot grow the memory.
    """
    vocabulary = tuple(spec.interaction_types)
    position, other = _type_positions(vocabulary), len(vocabulary)
    return remembered(_slot_memo(vocabulary), types, lambda t: _slot(t, position, other), SLOT_MEMO_SIZE)


@lru_cache(maxsize=32)
def _slot_memo(interaction_types: tuple[str, ...]) -> dict[object, int]:
    return {}


def counted_as(event_type: str, spec: FeatureSpec) -> str | None:
    """The vocabulary type an event of `event_type` counts as; None: an other event.

    A type the vocabulary lists is itself; a split type it does not list
    ("email_click__rare_channel") counts as its type when the vocabulary lists that.
    """
    position = _type_positions(tuple(spec.interaction_types))
    slot = _slot(event_type, position, len(spec.interaction_types))
    return spec.interaction_types[slot] if slot < len(spec.interaction_types) else None


def _slot(event_type: object, position: dict[str, int], other: int) -> int:
    if not isinstance(event_type, str):
        return other
    found = position.get(event_type)
    if found is not None:
        return found
    base = split_base(event_type)
    return position.get(base, other) if base is not None else other


@lru_cache(maxsize=32)
def _type_positions(interaction_types: tuple[str, ...]) -> dict[str, int]:
    return {t: i for i, t in enumerate(interaction_types)}


def _column_codes(column: pd.Series, encode: Callable[[np.ndarray], np.ndarray], missing: int) -> np.ndarray:
    # `encode` applied to the distinct values only (millions of events, a few types or a
    # million leads), then spread by factorize code; a missing value gets `missing`.
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return np.append(encode(np.asarray(uniques, dtype=object)), missing).astype(np.int64)[codes]


def _arrow_strings(column: pd.Series | pd.Index) -> pa.Array | pa.ChunkedArray | None:
    # Zero-copy view of an Arrow-backed text column (the loaders' and pandas 3's default); None
    # for other dtypes, which keep the factorize path (converting them would cost more).
    if isinstance(column.dtype, pd.StringDtype) and column.dtype.storage == "pyarrow":
        return pa.array(column)
    return None


def _positions(ids: pd.Series, lead_pos: pd.Index) -> np.ndarray:
    """`lead_pos.get_indexer(ids)` as int64 (-1: unknown); `lead_pos` holds no duplicate.

    With Arrow strings on both sides, Arrow's hash look-up: pandas would first make a Python
    string of every id (three quarters of its cost on 300,000 snapshots).
    """
    arr, known = _arrow_strings(ids), _arrow_strings(lead_pos)
    if arr is None or known is None or arr.type != known.type:
        return lead_pos.get_indexer(ids).astype(np.int64)
    if isinstance(known, pa.ChunkedArray):
        known = known.combine_chunks()
    found = pc.index_in(arr, value_set=known)  # a missing id matches a missing lead_id, as in get_indexer
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _lead_codes(column: pd.Series, lead_pos: pd.Index) -> np.ndarray:
    """Position in `lead_pos` of each event's lead_id (-1 when unknown).

    Validated interactions come grouped by lead: with Arrow strings, one look-up per run of
    equal ids instead of hashing every row (a third of the cost on 20M events).
    """
    arr = _arrow_strings(column)
    if arr is None or len(arr) < 2:
        return _column_codes(column, lead_pos.get_indexer, -1)
    change = pc.fill_null(pc.not_equal(arr[1:], arr[:-1]), True).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    if starts.size > len(arr) // 4:  # not grouped: runs are no cheaper than rows
        return _column_codes(column, lead_pos.get_indexer, -1)
    run_codes = _positions(pd.Series(arr.take(pa.array(starts)), dtype=column.dtype), lead_pos)
    return np.repeat(run_codes, np.diff(np.append(starts, len(arr))))


def _type_slot_codes(column: pd.Series, spec: FeatureSpec) -> np.ndarray:
    """`type_slots` of a column of interaction types (missing and unknown types: the "other" slot)."""
    other = len(spec.interaction_types)
    arr = _arrow_strings(column)
    if arr is None:
        return _column_codes(column, lambda t: type_slots(t, spec), other)
    found = pc.index_in(arr, value_set=pa.array(list(spec.interaction_types), type=arr.type))
    slots = pc.fill_null(found, other).to_numpy(zero_copy_only=False).astype(np.int64)
    if found.null_count:
        # Types outside the vocabulary: a split one may count as its type (`counted_as`), decided
        # once per distinct value.
        unmatched = pc.drop_null(pc.unique(pc.filter(arr, pc.is_null(found))))
        folded = np.append(type_slots(unmatched.to_pylist(), spec), other)
        if (folded[:-1] != other).any():
            where = pc.fill_null(pc.index_in(arr, value_set=unmatched), len(unmatched))
            slots = np.where(slots == other, folded[where.to_numpy(zero_copy_only=False).astype(np.int64)], slots)
    return slots


def _event_properties(interactions: pd.DataFrame, spec: FeatureSpec) -> np.ndarray | None:
    """float64 (n_events, n_properties) of the spec's property columns; None without properties.

    Raises:
        ValueError: A property column is missing, naming it.
    """
    if not spec.properties:
        return None
    missing = [p for p in spec.properties if p not in interactions.columns]
    if missing:
        raise ValueError(
            f"snapshot_features: interactions have no column for the event properties {missing} "
            f"(features.properties; found {list(interactions.columns)})"
        )
    return np.column_stack([_numeric_column(interactions[p]) for p in spec.properties]).reshape(len(interactions), len(spec.properties))


def snapshot_features(
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    snapshots: pd.DataFrame,
    spec: FeatureSpec,
) -> FeatureRows:
    """Point-in-time features for many (lead, as_of) snapshots at once.

    Args:
        leads: Validated leads: `lead_id`, `created_at` (UTC) and `spec.attribute_columns()`.
        interactions: Validated interactions: `lead_id`, `occurred_at` (UTC), `type`, and a
            float column per event property of `spec.properties` (NaN: the event has no value).
            Events of leads that have no snapshot are ignored.
        snapshots: `lead_id`, `as_of` (UTC); every lead_id must be in `leads`.
        spec: Feature specification.

    Returns:
        Features per snapshot row, in the order of `snapshots`.
    """
    lead_pos = pd.Index(leads["lead_id"])
    if not lead_pos.is_unique:
        raise ValueError("snapshot_features: leads.lead_id has duplicates")
    snap_codes = _positions(snapshots["lead_id"], lead_pos)
    if (snap_codes < 0).any():
        missing = snapshots["lead_id"][snap_codes < 0].unique()[:5].tolist()
        raise ValueError(f"snapshot_features: snapshots reference unknown lead_id (e.g. {missing})")
    event_codes = _lead_codes(interactions["lead_id"], lead_pos)
    known = event_codes >= 0
    created_s = to_epoch_seconds(leads["created_at"])
    properties = _event_properties(interactions, spec)
    index = build_event_index(
        event_codes[known],
        to_epoch_seconds(interactions["occurred_at"])[known],
        _type_slot_codes(interactions["type"], spec)[known],
        n_leads=len(lead_pos),
        n_slots=len(spec.interaction_types) + 1,
        properties=None if properties is None else properties[known],
    )
    behaviour = behaviour_matrix(index, snap_codes, to_epoch_seconds(snapshots["as_of"]), created_s[snap_codes], spec)
    per_lead = lead_attribute_rows(leads, spec)
    numeric = {k: v[snap_codes] for k, v in per_lead.numeric.items()}
    names = spec.behaviour_features()
    for j, name in enumerate(names):
        numeric[name] = behaviour[:, j]
    return FeatureRows(
        categorical={k: v[snap_codes] for k, v in per_lead.categorical.items()},
        numeric=numeric,
        category_codes={k: (code[snap_codes], distinct) for k, (code, distinct) in per_lead.category_codes.items()},
        behaviour=behaviour,
        behaviour_names=tuple(names),
    )


def lead_features(
    created_s: int,
    attributes: Mapping[str, object],
    event_times_s: Sequence[int] | np.ndarray,
    event_types: Sequence[str],
    as_of_s: int,
    spec: FeatureSpec,
    event_properties: Mapping[str, Sequence[float]] | None = None,
) -> FeatureRows:
    """Point-in-time features of one lead at one time: the serving path.

    Args:
        created_s: The lead's creation time, epoch seconds.
        attributes: Attribute name -> value (missing keys are treated as missing values).
        event_times_s: Interaction times, epoch seconds, any order.
        event_types: Interaction types, aligned with `event_times_s`.
        as_of_s: Snapshot time, epoch seconds.
        spec: Feature specification (from the model bundle).
        event_properties: Property name -> value per event, aligned with `event_times_s`
            (NaN: that event has no value); a property of `spec.properties` left out is
            missing on every event.

    Returns:
        A single-row `FeatureRows`.
    """
    times = np.asarray(event_times_s, dtype=np.int64)
    given = event_properties or {}
    properties = None
    if spec.properties:
        properties = np.full((times.size, len(spec.properties)), np.nan)
        for j, name in enumerate(spec.properties):
            if name in given:
                properties[:, j] = np.asarray(given[name], dtype=np.float64)
    index = build_event_index(
        np.zeros(times.size, dtype=np.int64),
        times,
        type_slots(list(event_types), spec),
        n_leads=1,
        n_slots=len(spec.interaction_types) + 1,
        properties=properties,
    )
    behaviour = behaviour_matrix(
        index,
        np.zeros(1, dtype=np.int64),
        np.array([as_of_s], dtype=np.int64),
        np.array([created_s], dtype=np.int64),
        spec,
    )
    values = {c: [attributes.get(c)] for c in spec.attribute_columns()}
    return assemble_rows(spec, values, behaviour)
