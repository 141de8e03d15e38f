"""The one definition of every behavioural and attribute feature.

Both executors of the project go through `behaviour_matrix`:
- training builds many leads x many snapshot times at once (`snapshot_features`);
- serving builds one lead, now (`lead_features`).

The computation is a fixed number of numpy calls over integer arrays (events sorted by lead,
type and time, queried with `searchsorted`), so one lead costs microseconds with no pandas
overhead, a million leads cost seconds, and a lead's values never depend on another lead's
rows: the functions can run per partition of leads on a cluster.

Time is whole seconds since the Unix epoch, UTC. An event at exactly `as_of` is seen by the
snapshot; anything later is not. Event properties (`FeatureSpec.properties`: numbers an event
carries, e.g. the pages of a web session) are summed and maxed over the same windows, from the
same (snapshot, seen event) pairs as the counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.email import email_domain_kind
from features.spec import FeatureSpec
from features.vocabulary import EMAIL_DOMAIN_KIND, split_base

SECONDS_PER_DAY = 86_400
_TIME_BITS = 34  # 2**34 s is about 544 years of relative time
_TIME_MAX = (1 << _TIME_BITS) - 1
# Engagement pairs (snapshot x past event) are processed in blocks of this many to bound memory.
_PAIR_BLOCK = 4_000_000
# Snapshots are computed in blocks of this many to bound the (snapshot x type x window) arrays.
_SNAPSHOT_BLOCK = 200_000


@dataclass(frozen=True)
class EventIndex:
    """Interactions of a set of leads, encoded for point-in-time queries.

    Attributes:
        n_leads: Number of leads (lead codes are 0..n_leads-1).
        n_slots: Number of type slots: the known vocabulary plus one "other" slot.
        base_s: Epoch second that relative times count from.
        type_key: Sorted int64 keys (lead, type slot, relative time) for per-type queries.
        lead_key: Sorted int64 keys (lead, relative time) for all-event queries.
        lead_time_s: Event times (epoch seconds), in `lead_key` order.
        lead_type: Type slot of each event, in `lead_key` order.
        new_day_prefix: Prefix sums of "first event of a UTC day for this lead", in `lead_key`
            order, with a leading 0 (length n_events + 1).
        slot_start: Position in `type_key` of the first event of each (lead, type slot) group,
            group lead * n_slots + slot, with the end as last entry (length n_leads * n_slots + 1).
        lead_properties: float64 (n_events, n_properties): each event's property values (NaN
            when it has none), in `lead_key` order; properties in `FeatureSpec.properties` order.
    """

    n_leads: int
    n_slots: int
    base_s: int
    type_key: np.ndarray
    lead_key: np.ndarray
    lead_time_s: np.ndarray
    lead_type: np.ndarray
    new_day_prefix: np.ndarray
    slot_start: np.ndarray
    lead_properties: np.ndarray


def _relative(times_s: np.ndarray, base_s: int) -> np.ndarray:
    # Events get relative times >= 1; queries are clipped into [0, _TIME_MAX], so a query
    # before every event (relative 0) never borrows into the previous key group.
    # minimum/maximum rather than np.clip: a third of the cost on the small arrays of one lead.
    return np.minimum(np.maximum(times_s.astype(np.int64) - base_s + 1, 0), _TIME_MAX)


def build_event_index(
    lead_codes: np.ndarray,
    times_s: np.ndarray,
    type_slots: np.ndarray,
    n_leads: int,
    n_slots: int,
    base_s: int,
    properties: np.ndarray | None = None,
) -> EventIndex:
    """Encode events for point-in-time queries.

    Args:
        lead_codes: Lead code (0..n_leads-1) of each event.
        times_s: Event time in epoch seconds.
        type_slots: Type slot of each event (vocabulary position, or n_slots-1 for other types).
        n_leads: Number of leads.
        n_slots: Vocabulary size plus one.
        base_s: Epoch second at or before every event of interest (query times below it are
            clipped; events below it are not allowed).
        properties: float64 (n_events, n_properties) property values of each event (NaN when
            missing); None when the spec has no properties.

    Returns:
        The index.
    """
    lead_codes = np.asarray(lead_codes, dtype=np.int64)
    values = np.empty((lead_codes.size, 0)) if properties is None else np.asarray(properties, dtype=np.float64)
    times_s = np.asarray(times_s, dtype=np.int64)
    type_slots = np.asarray(type_slots, dtype=np.int64)
    if times_s.size and times_s.min() < base_s:
        raise ValueError("build_event_index: an event is earlier than base_s")
    rel = _relative(times_s, base_s)
    type_key = np.sort(((lead_codes * n_slots + type_slots) << _TIME_BITS) + rel)
    lead_key_unsorted = (lead_codes << _TIME_BITS) + rel
    if lead_key_unsorted.size > 1 and (lead_key_unsorted[1:] < lead_key_unsorted[:-1]).any():
        order = np.argsort(lead_key_unsorted, kind="stable")
        lead_key = lead_key_unsorted[order]
        lead_time_s = times_s[order]
        lead_type = type_slots[order]
        lead_sorted = lead_codes[order]
        values = values[order]
    else:
        # Validated interactions come sorted by lead and time: the stable sort is the identity.
        lead_key, lead_time_s, lead_type, lead_sorted = lead_key_unsorted, times_s, type_slots, lead_codes
    day = lead_time_s // SECONDS_PER_DAY
    new_day = np.ones(lead_key.size, dtype=np.int64)
    if lead_key.size > 1:
        new_day[1:] = (day[1:] != day[:-1]) | (lead_sorted[1:] != lead_sorted[:-1])
    new_day_prefix = np.concatenate([[0], np.cumsum(new_day)])
    group_sizes = np.bincount(type_key >> _TIME_BITS, minlength=n_leads * n_slots)
    slot_start = np.concatenate([[0], np.cumsum(group_sizes)])
    return EventIndex(
        n_leads=n_leads,
        n_slots=n_slots,
        base_s=base_s,
        type_key=type_key,
        lead_key=lead_key,
        lead_time_s=lead_time_s,
        lead_type=lead_type,
        new_day_prefix=new_day_prefix,
        slot_start=slot_start,
        lead_properties=values,
    )


def behaviour_matrix(
    index: EventIndex,
    snap_lead: np.ndarray,
    snap_as_of_s: np.ndarray,
    snap_created_s: np.ndarray,
    spec: FeatureSpec,
) -> np.ndarray:
    """Behavioural features of each snapshot, in `spec.behaviour_features()` order.

    Args:
        index: The leads' events.
        snap_lead: Lead code of each snapshot.
        snap_as_of_s: Snapshot time (epoch seconds); only events at or before it are seen.
        snap_created_s: Creation time of the snapshot's lead (epoch seconds).
        spec: Which windows, types and weights.

    Returns:
        float64 array of shape (n_snapshots, len(spec.behaviour_features())).
    """
    snap_lead = np.asarray(snap_lead, dtype=np.int64)
    as_of = np.asarray(snap_as_of_s, dtype=np.int64)
    n_snap = snap_lead.size
    if not spec.interactions:  # a static spec has no behaviour block
        return np.empty((n_snap, 0), dtype=np.float64)
    if not spec.events:  # no interaction in the data: the lead's age is the whole block
        return ((as_of - np.asarray(snap_created_s, dtype=np.int64)) / SECONDS_PER_DAY).astype(np.float64)[:, None]
    n_types = len(spec.interaction_types)
    n_slots = index.n_slots
    n_win = len(spec.windows_days)

    # The events a snapshot sees are a contiguous range of its lead's (lead, time) ordering:
    # from the lead's first event up to as_of.
    lead_group = snap_lead << _TIME_BITS
    rel_now = _relative(as_of, index.base_s)
    lead_start = np.searchsorted(index.lead_key, lead_group, side="left")
    lead_now = np.searchsorted(index.lead_key, lead_group + rel_now, side="right")
    lead_30 = np.searchsorted(
        index.lead_key,
        lead_group + _relative(as_of - 30 * SECONDS_PER_DAY, index.base_s),
        side="right",
    )
    active_total = _distinct_days(index.new_day_prefix, lead_start, lead_now)
    active_30 = _distinct_days(index.new_day_prefix, lead_30, lead_now)
    engagement, counts, property_block = _seen_event_sums(index, lead_start, lead_now, as_of, spec)
    total = counts[:, :, n_win]  # (n_snap, n_slots)
    in_window = counts[:, :, :n_win]  # (n_snap, n_slots, n_win)

    # The last event of a (lead, type) seen by a snapshot: the type's events are time-sorted in
    # `type_key`, and the snapshot sees the first `total` of them.
    seen_last = index.slot_start[snap_lead[:, None] * n_slots + np.arange(n_slots)[None, :]] + total - 1
    if index.type_key.size:
        last_rel = index.type_key[np.minimum(np.maximum(seen_last, 0), index.type_key.size - 1)] & _TIME_MAX
    else:
        last_rel = np.zeros_like(seen_last)
    never = np.nan if spec.never_seen_days is None else spec.never_seen_days
    days_since = np.where(total > 0, (rel_now[:, None] - last_rel) / SECONDS_PER_DAY, never)

    per_type = np.empty((n_snap, n_types, n_win + 2), dtype=np.float64)
    per_type[:, :, :n_win] = in_window[:, :n_types, :]
    per_type[:, :, n_win] = total[:, :n_types]
    per_type[:, :, n_win + 1] = days_since[:, :n_types]
    tail = np.column_stack(
        [
            total[:, :n_types].sum(axis=1),
            total[:, n_types],
            engagement,
            active_30,
            active_total,
            (as_of - np.asarray(snap_created_s, dtype=np.int64)) / SECONDS_PER_DAY,
        ]
    ).astype(np.float64)
    return np.concatenate([per_type.reshape(n_snap, -1), tail, property_block], axis=1)


def _distinct_days(new_day_prefix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    # Events lo..hi-1 of one lead, time-sorted: the first is always a new day within the range,
    # each later one is new when the index flagged it as the lead's first on its UTC day.
    has_events = hi > lo
    later_new = new_day_prefix[hi] - new_day_prefix[np.minimum(lo + 1, hi)]
    return np.where(has_events, 1 + later_new, 0)


def _seen_event_sums(
    index: EventIndex,
    lo: np.ndarray,
    hi: np.ndarray,
    as_of: np.ndarray,
    spec: FeatureSpec,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decayed engagement, event counts and property aggregates over the events each snapshot sees.

    A snapshot sees events lo..hi-1 of the (lead, time) ordering. Every (snapshot, seen event)
    pair is visited once, in blocks of about `_PAIR_BLOCK` pairs to bound memory:
    - engagement: sum of weight(type) * 0.5 ** (age / half-life), summed per snapshot over its
      lead's events in time order, so a lead's float result does not depend on which other
      leads are computed with it;
    - counts: per type slot, the events younger than each window (an event at exactly
      as_of - window is out), and all of them;
    - properties: per property and aggregate, the same windows over the events carrying a
      value, summed in the lead's time order (0 without a value) or maxed (NaN without one).

    Returns:
        (engagement of shape (n_snap,), int64 counts of shape (n_snap, n_slots, n_windows + 1):
        one column per window in `spec.windows_days` order, then the total; float64 property
        features of shape (n_snap, len(spec.property_features())), in that order).
    """
    weights = np.array([engagement_weight(t, spec) for t in spec.interaction_types] + [0.0])
    halflife_s = spec.halflife_days * SECONDS_PER_DAY
    windows_s = np.asarray(spec.windows_days, dtype=np.int64) * SECONDS_PER_DAY  # ascending
    n_win, n_slots = windows_s.size, index.n_slots
    lengths = hi - lo
    engagement = np.zeros(as_of.size, dtype=np.float64)
    counts = np.zeros((as_of.size, n_slots, n_win + 1), dtype=np.int64)
    aggregates = [(p, a) for p, (_, wanted) in enumerate(spec.properties.items()) for a in wanted]
    # Sums start at 0 (nothing seen adds nothing), maxima at -inf (turned into NaN at the end).
    properties = np.zeros((as_of.size, len(aggregates), n_win + 1), dtype=np.float64)
    for k, (_, aggregate) in enumerate(aggregates):
        if aggregate == "max":
            properties[:, k, :] = -np.inf
    ends = np.cumsum(lengths)
    first = 0
    while first < as_of.size:
        # Grow the block of snapshots until it holds about _PAIR_BLOCK pairs.
        stop = int(np.searchsorted(ends, (ends[first - 1] if first else 0) + _PAIR_BLOCK, "right"))
        stop = max(stop, first + 1)
        block_len = lengths[first:stop]
        n_pairs = int(block_len.sum())
        if n_pairs:
            n_block = stop - first
            snap = np.repeat(np.arange(n_block), block_len)
            block_starts = np.cumsum(block_len) - block_len
            event = np.repeat(lo[first:stop] - block_starts, block_len) + np.arange(n_pairs)
            age_s = as_of[first:stop][snap] - index.lead_time_s[event]
            slot = index.lead_type[event]
            contrib = weights[slot] * np.exp2(-(age_s / halflife_s))
            engagement[first:stop] = np.bincount(snap, weights=contrib, minlength=n_block)
            # Bucket j: the event is outside the j shortest windows; a window's count is the
            # number of events in buckets before it.
            bucket = np.searchsorted(windows_s, age_s, side="right")
            histogram = np.bincount(
                (snap * n_slots + slot) * (n_win + 1) + bucket, minlength=n_block * n_slots * (n_win + 1)
            ).reshape(n_block, n_slots, n_win + 1)
            counts[first:stop, :, :n_win] = np.cumsum(histogram[:, :, :n_win], axis=2)
            counts[first:stop, :, n_win] = histogram.sum(axis=2)
            cell = snap * (n_win + 1) + bucket
            for k, (p, aggregate) in enumerate(aggregates):
                values = index.lead_properties[event, p]
                has = ~np.isnan(values)
                if aggregate == "sum":
                    per_bucket = np.bincount(cell[has], weights=values[has], minlength=n_block * (n_win + 1))
                    # Running sums over the buckets, in window order: the last is the total.
                    properties[first:stop, k, :] = np.cumsum(per_bucket.reshape(n_block, n_win + 1), axis=1)
                else:
                    per_bucket = np.full(n_block * (n_win + 1), -np.inf)
                    np.maximum.at(per_bucket, cell[has], values[has])
                    properties[first:stop, k, :] = np.maximum.accumulate(per_bucket.reshape(n_block, n_win + 1), axis=1)
        first = stop
    properties[np.isneginf(properties)] = np.nan
    return engagement, counts, properties.reshape(as_of.size, len(aggregates) * (n_win + 1))


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
    """

    categorical: dict[str, np.ndarray]
    numeric: dict[str, np.ndarray]

    def to_frame(self, spec: FeatureSpec) -> pd.DataFrame:
        """All features as a DataFrame in `spec.feature_names()` order (categories as object)."""
        columns: dict[str, np.ndarray] = {**self.categorical, **self.numeric}
        return pd.DataFrame({name: columns[name] for name in spec.feature_names()})

    def row(self, i: int) -> dict[str, object]:
        """One snapshot's features as a plain dict (for grids and reasons)."""
        values: dict[str, object] = {k: v[i] for k, v in self.categorical.items()}
        values.update({k: float(v[i]) for k, v in self.numeric.items()})
        return values


def _category_values(values: Sequence[object] | np.ndarray) -> np.ndarray:
    # A category is its text; missing stays None (never the string "nan").
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
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
    # A rule applied once per distinct value (a CRM column has few), then spread by code: the
    # same values as `convert(column)` without a Python call per row. Missing values get
    # pd.factorize's code -1, which picks the `None` appended last.
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return convert(np.append(np.asarray(uniques, dtype=object), np.array([None], dtype=object)))[codes]


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
    categorical = {c: _by_distinct_value(leads[c], _category_values) for c in spec.categorical}
    if spec.email_column:
        categorical[EMAIL_DOMAIN_KIND] = _by_distinct_value(leads[spec.email_column], _email_kinds)
    numeric = {c: _numeric_column(leads[c]) for c in spec.numeric}
    return FeatureRows(categorical=categorical, numeric=numeric)


def assemble_rows(
    spec: FeatureSpec,
    attributes: Mapping[str, Sequence[object] | np.ndarray],
    behaviour: np.ndarray,
) -> FeatureRows:
    """Combine per-snapshot attribute values and the behaviour matrix into `FeatureRows`.

    Args:
        spec: Feature specification.
        attributes: Column -> value per snapshot, for every column in `spec.attribute_columns()`.
        behaviour: Output of `behaviour_matrix` for the same snapshots.
    """
    categorical = {c: _category_values(attributes[c]) for c in spec.categorical}
    if spec.email_column:
        categorical[EMAIL_DOMAIN_KIND] = _email_kinds(attributes[spec.email_column])
    numeric = {c: _numeric_values(attributes[c]) for c in spec.numeric}
    for j, name in enumerate(spec.behaviour_features()):
        numeric[name] = behaviour[:, j]
    return FeatureRows(categorical=categorical, numeric=numeric)


def to_epoch_seconds(values: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """UTC timestamps to whole epoch seconds (truncated), as int64."""
    stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return stamps.as_unit("s").asi8.astype(np.int64)


def type_slots(types: Sequence[str] | np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Vocabulary position of each interaction type (`counted_as`); others go to the last ("other") slot."""
    position = _type_positions(tuple(spec.interaction_types))
    other = len(spec.interaction_types)
    slot_of: dict[object, int] = {}  # a few distinct types among many events: each looked up once
    for t in types:
        if t not in slot_of:
            slot_of[t] = _slot(t, position, other)
    return np.fromiter((slot_of[t] for t in types), dtype=np.int64, count=len(types))


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


def _arrow_strings(column: pd.Series) -> pa.Array | pa.ChunkedArray | None:
    # Zero-copy view of an Arrow-backed text column (the loaders' and pandas 3's default); None
    # for other dtypes, which keep the factorize path (converting them would cost more).
    if isinstance(column.dtype, pd.StringDtype) and column.dtype.storage == "pyarrow":
        return pa.array(column)
    return None


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
    heads = pd.Series(arr.take(pa.array(starts)), dtype=column.dtype)
    run_codes = lead_pos.get_indexer(heads).astype(np.int64)
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
    snap_codes = lead_pos.get_indexer(snapshots["lead_id"])
    if (snap_codes < 0).any():
        missing = snapshots["lead_id"][snap_codes < 0].unique()[:5].tolist()
        raise ValueError(f"snapshot_features: snapshots reference unknown lead_id (e.g. {missing})")
    event_codes = _lead_codes(interactions["lead_id"], lead_pos)
    known = event_codes >= 0
    created_s = to_epoch_seconds(leads["created_at"])
    event_s = to_epoch_seconds(interactions["occurred_at"])[known]
    base = int(min(created_s.min(initial=0), event_s.min(initial=0))) if created_s.size else 0
    properties = _event_properties(interactions, spec)
    index = build_event_index(
        event_codes[known],
        event_s,
        _type_slot_codes(interactions["type"], spec)[known],
        n_leads=len(lead_pos),
        n_slots=len(spec.interaction_types) + 1,
        base_s=base,
        properties=None if properties is None else properties[known],
    )
    as_of_s = to_epoch_seconds(snapshots["as_of"])
    behaviour = np.empty((len(snap_codes), len(spec.behaviour_features())), dtype=np.float64)
    for lo in range(0, len(snap_codes), _SNAPSHOT_BLOCK):
        hi = lo + _SNAPSHOT_BLOCK
        behaviour[lo:hi] = behaviour_matrix(
            index, snap_codes[lo:hi], as_of_s[lo:hi], created_s[snap_codes[lo:hi]], spec
        )
    per_lead = lead_attribute_rows(leads, spec)
    numeric = {k: v[snap_codes] for k, v in per_lead.numeric.items()}
    for j, name in enumerate(spec.behaviour_features()):
        numeric[name] = behaviour[:, j]
    return FeatureRows(categorical={k: v[snap_codes] for k, v in per_lead.categorical.items()}, numeric=numeric)


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
    base = int(min(created_s, times.min(initial=created_s)))
    index = build_event_index(
        np.zeros(times.size, dtype=np.int64),
        times,
        type_slots(list(event_types), spec),
        n_leads=1,
        n_slots=len(spec.interaction_types) + 1,
        base_s=base,
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
