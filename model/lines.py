"""Scoring JSON lines (`leadscore score -i leads.jsonl`): a chunk's common lines read in columns, any other line alone.

Each line is a lead as in POST /score's `lead` (`model.scoring.LeadIn`). Validated as a `LeadIn`, a
line costs tens of microseconds (a pydantic model and two Python validators per interaction), and
as much again to read (`read_lead`) and to answer (a `ScoreOut`). The common line goes a faster
way to the same answer, byte for byte (tests/test_json_lines.py):

* Arrow reads the chunk's lines into columns at once (`_arrow_parts`). It keeps a line when it
  reads it to the values `_LeadLine` would give: every required field there and not null, within
  its constraints, every attribute declared and not null (Arrow cannot tell a null sent from a key
  left out; pydantic can), every number finite (`_arrow_columns`). A piece of the chunk that Arrow
  cannot read at all (a line not JSON, a field of two kinds) is halved until the lines it can read
  are read;
* any other line is validated by pydantic-core into plain dicts (`_LeadLine`: `LeadIn`'s fields
  and constraints, the times as text; no event properties, no unknown field, no infinite number);
* the times are read in numpy (`zoned_times_us`: the ISO 8601 form with seconds and a zone, which
  pydantic reads as the same instant), the attributes by the lead schema, each distinct text once;
* the chunk's common leads are answered together in columns (`model.scoring.answers_json`), with
  their reasons when asked: the contributions of all of them at once, then each lead's reasons
  ranked and phrased as for one lead.

Any other line — a time without a zone or in another form, event properties, a value the schema
cannot read, a lead created after `as_of`, anything the light type refuses — is validated and
read alone as before (`LeadIn`, `read_lead`), so its answer or its error is the one it always had.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Annotated, Any, NotRequired

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from numpy.typing import NDArray
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic reads `typing.TypedDict` from Python 3.12 only

from features.engine import counted_as, type_slots
from features.schema import AttributesRead, LeadSchema
from features.spec import FeatureSpec
from model.bundle import ScoringModel
from model.compiled import CompileMode
from model.scoring import (
    CLOCK_SKEW,
    EPOCH,
    MAX_INTERACTIONS_PER_LEAD,
    AttributeValue,
    InteractionType,
    LeadColumns,
    LeadId,
    LeadIn,
    LeadRead,
    answers_json,
    read_lead,
    read_warnings,
    score_read_leads,
    to_utc,
)

LineError = dict[str, Any]
"""A rejected line: {"line": its number from 1, "error": the first lines of the message}."""


# `LeadIn` and `InteractionIn` with their constraints, stricter where a line is not common: pydantic-core
# makes dicts of these without a Python call per interaction.
@with_config(ConfigDict(extra="forbid", allow_inf_nan=False))
class _InteractionLine(TypedDict):
    type: InteractionType
    occurred_at: str
    channel: NotRequired[str | None]
    properties: NotRequired[None]


@with_config(ConfigDict(extra="forbid", allow_inf_nan=False))
class _LeadLine(TypedDict):
    lead_id: LeadId
    created_at: str
    attributes: NotRequired[dict[str, AttributeValue]]
    interactions: NotRequired[Annotated[list[_InteractionLine], Field(max_length=MAX_INTERACTIONS_PER_LEAD)]]


_LEAD_LINE: TypeAdapter[_LeadLine] = TypeAdapter(_LeadLine)

# The time form read here: 2024-03-01T10:00:00Z, with 1 to 6 decimals of a second, and "Z" or an
# offset such as +01:00. Its longest text, and the years read (where the microseconds since 1970
# are exact in a float64, as `datetime.timestamp` divides them).
_TIME_CHARS = 32
_FIRST_YEAR, _LAST_YEAR = 1900, 2200
_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_MARKS = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":"}
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def zoned_times_us(texts: Sequence[str] | pa.StringArray) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Microseconds since 1970 (UTC) of ISO 8601 times with a zone, read in numpy, and which texts are of that form.

    The form is `YYYY-MM-DDTHH:MM:SS`, optionally `.` and 1 to 6 digits, then `Z` or `+HH:MM` /
    `-HH:MM`, a valid date and time of the years 1900 to 2200 and an offset below 24 hours: times
    that pydantic reads (`model.scoring.Timestamp`) as this instant (tests/test_json_lines.py).
    Any other text (naive, another form or year, out of range) is marked False, its value 0.

    Args:
        texts: The times as sent: Python texts, or an Arrow string array without nulls.

    Returns:
        (int64 microseconds, bool: of the form).
    """
    n = len(texts)
    lengths, chars = _arrow_ascii_rows(texts) if isinstance(texts, pa.Array) else _python_ascii_rows(texts)
    digits = chars - np.uint8(ord("0"))  # wraps below "0": a digit is 0 to 9
    is_digit = digits <= 9
    ok = (lengths >= 20) & (lengths <= _TIME_CHARS) & is_digit[:, _DIGITS].all(axis=1)
    for at, mark in _MARKS.items():
        ok &= chars[:, at] == ord(mark)

    def number(*positions: int) -> NDArray[np.int64]:
        out = np.zeros(n, dtype=np.int64)
        for at in positions:
            out = out * 10 + digits[:, at]
        return out

    year, month, day = number(0, 1, 2, 3), number(5, 6), number(8, 9)
    hour, minute, second = number(11, 12), number(14, 15), number(17, 18)
    # Decimals: the digits after a "." at 19, up to the zone (7 or more: not this form).
    with_decimals = chars[:, 19] == ord(".")
    after_dot = is_digit[:, 20:27]
    decimals = np.where(with_decimals, np.where(after_dot.all(axis=1), 7, np.argmin(after_dot, axis=1)), 0)
    ok &= ~with_decimals | ((decimals >= 1) & (decimals <= 6))
    micro = np.zeros(n, dtype=np.int64)
    if with_decimals.any():
        scale = np.array([100_000, 10_000, 1_000, 100, 10, 1], dtype=np.int64)
        micro = (digits[:, 20:26] * np.where(np.arange(6) < decimals[:, None], scale, 0)).sum(axis=1)
    zone = np.where(with_decimals, 20 + decimals, 19)  # at most 27: its offset's last digit at most 32
    rows = np.arange(n)

    def at_zone(k: int) -> NDArray[np.uint8]:
        at: NDArray[np.uint8] = chars[rows, np.minimum(zone + k, _TIME_CHARS - 1)]
        return at

    sign = at_zone(0)
    utc = (sign == ord("Z")) & (lengths == zone + 1)
    offset_chars = [at_zone(k) - np.uint8(ord("0")) for k in (1, 2, 4, 5)]
    offset = ((sign == ord("+")) | (sign == ord("-"))) & (lengths == zone + 6) & (at_zone(3) == ord(":"))
    offset &= (offset_chars[0] <= 9) & (offset_chars[1] <= 9) & (offset_chars[2] <= 9) & (offset_chars[3] <= 9)
    offset_hours = offset_chars[0].astype(np.int64) * 10 + offset_chars[1]
    offset_minutes = offset_chars[2].astype(np.int64) * 10 + offset_chars[3]
    ok &= utc | (offset & (offset_hours <= 23) & (offset_minutes <= 59))
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + ((month == 2) & leap)
    ok &= (year >= _FIRST_YEAR) & (year <= _LAST_YEAR) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    y = year - (month <= 2)
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146_097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - 719_468
    offset_s = np.where(utc, 0, np.where(sign == ord("-"), -1, 1) * (offset_hours * 3600 + offset_minutes * 60))
    us = (days * 86_400 + hour * 3600 + minute * 60 + second - offset_s) * 1_000_000 + micro
    return np.where(ok, us, 0), ok


def _python_ascii_rows(texts: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """`_ascii_rows` of Python texts, joined into one buffer."""
    joined = "".join(texts)
    if joined.isascii():
        data, lengths = joined.encode("ascii"), np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    else:  # lengths in bytes: a text with a byte of 128 or more has an empty row anyway
        encoded = [text.encode("utf-8", "surrogatepass") for text in texts]
        data, lengths = b"".join(encoded), np.fromiter(map(len, encoded), dtype=np.int64, count=len(texts))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return lengths, _ascii_rows(np.frombuffer(data, dtype=np.uint8), offsets)


def _arrow_ascii_rows(texts: pa.StringArray) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """`_ascii_rows` of an Arrow string array, read from its buffers."""
    n = len(texts)
    if texts.null_count:
        raise ValueError("times: an Arrow array with nulls")
    _validity, offset_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int32)[texts.offset : texts.offset + n + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, dtype=np.uint8)
    return np.diff(offsets), _ascii_rows(data, offsets)


def _ascii_rows(data: NDArray[np.uint8], offsets: NDArray[np.int64]) -> NDArray[np.uint8]:
    """The texts' bytes (text i: `data[offsets[i]:offsets[i + 1]]`), one row of `_TIME_CHARS` per text, zeros after
    its end; a longer text cut, a text with a byte of 128 or more (not ASCII) empty."""
    n = len(offsets) - 1
    out = np.zeros((n, _TIME_CHARS), dtype=np.uint8)
    if n == 0:
        return out
    lengths = np.diff(offsets)
    width = int(lengths[0])
    if width <= _TIME_CHARS and bool((lengths == width).all()):  # the common case: one form for all
        out[:, :width] = data[offsets[0] : offsets[0] + n * width].reshape(n, width)
    elif len(data):
        at = offsets[:-1, None] + np.arange(_TIME_CHARS)
        inside = np.arange(_TIME_CHARS) < np.minimum(lengths, _TIME_CHARS)[:, None]
        out[:] = np.where(inside, data[np.minimum(at, len(data) - 1)], 0)
    high = np.concatenate([[0], np.cumsum(data[offsets[0] : offsets[-1]] >= 128)])
    out[high[offsets[1:] - offsets[0]] > high[offsets[:-1] - offsets[0]]] = 0
    return out


def epoch_seconds(us: NDArray[np.int64]) -> NDArray[np.int64]:
    """Whole seconds of microseconds since 1970 as `int(datetime.timestamp())` gives them: divided as floats, truncated.

    Exact for the times `zoned_times_us` reads (microseconds below 2**53).
    """
    return np.trunc(us / 1e6).astype(np.int64)


def _microseconds(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class _CommonLeads:
    """The common leads of a chunk, read: their columns, and what `LeadRead`s of them need besides."""

    positions: list[int]  # in the decoded lines
    columns: LeadColumns
    attributes: AttributesRead  # of every decoded line
    types: list[str]  # the distinct types (as read) of the kept interactions
    type_codes: NDArray[np.int64]  # each kept interaction's, into `types`

    def reads(self, spec_properties: Sequence[str]) -> list[LeadRead]:
        """The leads as `read_lead` reads them (tests/test_json_lines.py checks the columns against `read_lead` with it)."""
        c = self.columns
        stops = np.cumsum(c.event_counts).tolist()
        starts = [0, *stops][:-1]
        times, codes = c.times.tolist(), self.type_codes.tolist()
        return [
            LeadRead(c.lead_ids[k], c.as_of[k], int(c.created_s[k]), int(c.as_of_s[k]), self.attributes.values(i),
                     times[a:b], [self.types[t] for t in codes[a:b]], {name: [math.nan] * (b - a) for name in spec_properties},
                     c.warnings[k])
            for k, (i, a, b) in enumerate(zip(self.positions, starts, stops, strict=True))
        ]  # fmt: skip


@dataclass(frozen=True)
class _LineColumns:
    """Decoded lines in columns: what `_read_common` reads, from pydantic's dicts or from an Arrow table."""

    lead_ids: list[str]
    created_at: Sequence[str] | pa.StringArray
    event_counts: NDArray[np.int64]  # per lead
    occurred_at: Sequence[str] | pa.StringArray  # the leads' interactions, lead after lead
    kinds: list[str]  # the distinct interaction types as sent
    kind_codes: NDArray[np.int64]  # each interaction's, into `kinds`
    channels: list[str]  # the distinct channels, where the schema splits types by them (`split_types`)
    channel_codes: NDArray[np.int64]  # each interaction's, into `channels` (-1: none, or not read)
    attributes: AttributesRead

    @classmethod
    def of_dicts(cls, schema: LeadSchema, leads: Sequence[_LeadLine]) -> _LineColumns:
        """Lines validated by `_LEAD_LINE`."""
        interactions = [lead.get("interactions", []) for lead in leads]
        events = [event for own in interactions for event in own]
        kinds, kind_codes = _factorized(list(map(itemgetter("type"), events)))
        channels, channel_codes = _factorized([event.get("channel") for event in events]) if schema.split_types else ([], np.full(len(events), -1, dtype=np.int64))
        return cls(
            lead_ids=[lead["lead_id"] for lead in leads],
            created_at=[lead["created_at"] for lead in leads],
            event_counts=np.fromiter(map(len, interactions), dtype=np.int64, count=len(leads)),
            occurred_at=list(map(itemgetter("occurred_at"), events)),
            kinds=kinds, kind_codes=kind_codes, channels=channels, channel_codes=channel_codes,
            attributes=schema.normalise_attribute_columns([lead.get("attributes", {}) for lead in leads]),
        )  # fmt: skip


# How Arrow reads a chunk of lines (`_arrow_table`): the times as text (Arrow would read them as timestamps
# of its own), everything else as found; `_arrow_columns` then keeps what `_LeadLine` would read alike.
_ARROW_PARSE = pa_json.ParseOptions(
    explicit_schema=pa.schema([("created_at", pa.string()), ("interactions", pa.list_(pa.struct([("occurred_at", pa.string())])))]),
    unexpected_field_behavior="infer",
)
_LINE_FIELDS = frozenset(_LeadLine.__annotations__)
_EVENT_FIELDS = frozenset(_InteractionLine.__annotations__)
_LEAD_ID_CHARS, _TYPE_CHARS = (200, 100)  # `LeadId`, `InteractionType`
ARROW_MIN_LINES = 64
"""A piece of a chunk that Arrow cannot read is halved down to this many lines (`_arrow_parts`)."""


def _arrow_table(lines: Sequence[str]) -> pa.Table | None:
    """The lines read by Arrow as one table, a row per line; None when Arrow cannot (a line not JSON, a key twice,
    a field of two kinds, a number too large, ...)."""
    try:
        table = pa_json.read_json(pa.py_buffer("\n".join(lines).encode()), parse_options=_ARROW_PARSE)
    except (pa.ArrowInvalid, UnicodeEncodeError):
        return None
    return table if table.num_rows == len(lines) else None


def _valid(array: pa.Array) -> NDArray[np.bool_]:
    valid: NDArray[np.bool_] = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return valid


def _text_lengths(array: pa.Array) -> NDArray[np.int64]:
    # Characters, as pydantic counts them (0 where null).
    lengths: NDArray[np.int64] = np.asarray(pc.utf8_length(array).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return lengths


def _arrow_columns(schema: LeadSchema, table: pa.Table, lines: Sequence[str]) -> tuple[_LineColumns, NDArray[np.bool_]] | None:
    """The rows of an Arrow table of lines that `_LEAD_LINE` reads to the same values, in columns, and which rows they are.

    A row is kept when every field `_LeadLine` requires is there and not null, within its
    constraints, every attribute a declared one, and every number finite. A null in a field may
    be a key left out or a null sent, which pydantic tells apart and Arrow does not: a null
    attribute is told from its line (`_sent_null`); a row where that cannot be told, and any other
    row not kept, is for pydantic. None: the table's shape is not one this reads (a field
    `_LeadLine` forbids, a type of its own, a key the schema does not declare, which `extra` lists
    in the order sent): every row is for pydantic.
    """
    n = table.num_rows
    if not set(table.column_names) <= _LINE_FIELDS or "lead_id" not in table.column_names:
        return None
    lead_ids, created = (table.column(name).combine_chunks() for name in ("lead_id", "created_at"))
    events = table.column("interactions").combine_chunks()
    event_type = events.type.value_type
    event_fields = {field.name: field.type for field in event_type}
    if lead_ids.type != pa.string() or not set(event_fields) <= _EVENT_FIELDS:
        return None
    lead_chars = _text_lengths(lead_ids)
    keep = _valid(lead_ids) & (lead_chars >= 1) & (lead_chars <= _LEAD_ID_CHARS) & _valid(created) & _valid(events)
    counts = np.asarray(events.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    keep &= counts <= MAX_INTERACTIONS_PER_LEAD
    items = events.flatten()
    if len(items) != counts.sum():
        return None
    if len(items):
        if event_fields.get("type") != pa.string() or event_fields.get("channel", pa.null()) not in (pa.string(), pa.null()):
            return None
        if event_fields.get("properties", pa.null()) != pa.null():
            return None
        kind_chars = _text_lengths(items.field("type"))
        wrong = ~_valid(items) | ~_valid(items.field("type")) | ~_valid(items.field("occurred_at"))
        wrong |= (kind_chars < 1) | (kind_chars > _TYPE_CHARS)
        keep &= np.bincount(np.repeat(np.arange(n), counts)[wrong], minlength=n) == 0
    sent: list[tuple[str, pa.Array, NDArray[np.bool_]]] = []
    if "attributes" in table.column_names:
        attributes = table.column("attributes").combine_chunks()
        if not pa.types.is_struct(attributes.type):
            return None
        keep &= _valid(attributes)
        for k, field in enumerate(attributes.type):
            values = attributes.field(k)
            given = _valid(values)
            if pa.types.is_floating(field.type):
                keep &= np.isfinite(np.asarray(values.fill_null(0.0).to_numpy(zero_copy_only=False), dtype=np.float64))
            for i in np.flatnonzero(keep & ~given).tolist():  # a null: sent so, or the key left out
                sent_null = _sent_null(lines[i], field.name)
                keep[i] = sent_null is not None
                given[i] = bool(sent_null)
            sent.append((field.name, values, given))
    at = pa.array(np.flatnonzero(keep))
    try:
        read = schema.normalise_attribute_arrays(len(at), [(key, values.take(at), given[keep]) for key, values, given in sent])
    except ValueError:  # an undeclared key, a float category, ...
        return None
    events = events.take(at)
    items = events.flatten()
    kinds, kind_codes = _encoded(items.field("type")) if len(items) else ([], np.zeros(0, dtype=np.int64))
    channel = items.field("channel") if len(items) and "channel" in event_fields and schema.split_types else None
    channels, channel_codes = _encoded(channel) if channel is not None and channel.type == pa.string() else ([], np.full(len(items), -1, dtype=np.int64))
    columns = _LineColumns(
        lead_ids=lead_ids.take(at).to_pylist(),
        created_at=created.take(at),
        event_counts=np.asarray(events.value_lengths().to_numpy(zero_copy_only=False), dtype=np.int64),
        occurred_at=items.field("occurred_at") if len(items) else [],
        kinds=kinds, kind_codes=kind_codes, channels=channels, channel_codes=channel_codes, attributes=read,
    )  # fmt: skip
    return columns, keep


def _sent_null(line: str, key: str) -> bool | None:
    """Whether a line whose attribute `key` Arrow read as null sent it (as null), or left it out; None: cannot tell.

    In a line without a backslash, no text holds a quote, so `"key"` then a colon is a key; an
    attribute named as a lead or event field could be one of those.
    """
    if "\\" in line or key in _LINE_FIELDS or key in _EVENT_FIELDS:
        return None
    return re.search(rf'"{re.escape(key)}"[ \t]*:', line) is not None


def _encoded(array: pa.Array) -> tuple[list[str], NDArray[np.int64]]:
    # `_factorized` of an Arrow array: the distinct values (no null) and each value's code into them (-1: null).
    encoded = array.dictionary_encode()
    codes = np.asarray(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return encoded.dictionary.to_pylist(), codes


def _arrow_parts(schema: LeadSchema, numbered: Sequence[tuple[int, str]]) -> tuple[list[tuple[list[int], _LineColumns]], list[tuple[int, str]]]:
    """A chunk's lines read by Arrow where it reads them as `_LEAD_LINE` does: (each part's line numbers and columns;
    the lines left for pydantic, in order).

    A piece that Arrow cannot read, or not in columns of `_LineColumns` (`_arrow_columns`: None), is
    halved, and each half tried, down to `ARROW_MIN_LINES`; when both halves fail too (the lines
    are not of one form throughout), the piece is left for pydantic. At worst, then, a chunk is
    read twice by Arrow before pydantic reads it.
    """
    parts: list[tuple[list[int], _LineColumns]] = []
    left: list[tuple[int, str]] = []

    def read(piece: Sequence[tuple[int, str]]) -> bool:
        texts = [line for _number, line in piece]
        table = _arrow_table(texts)
        if table is None:
            return False
        found = _arrow_columns(schema, table, texts)
        if found is None:  # a shape of its own (an undeclared key, say): the lines without it may be read
            return False
        columns, keep = found
        if keep.any():
            parts.append(([piece[k][0] for k in np.flatnonzero(keep).tolist()], columns))
        left.extend(piece[k] for k in np.flatnonzero(~keep).tolist())
        return True

    def halve(piece: Sequence[tuple[int, str]]) -> None:  # a piece Arrow could not read
        if len(piece) < ARROW_MIN_LINES:
            left.extend(piece)
            return
        halves = piece[: len(piece) // 2], piece[len(piece) // 2 :]
        read_ = [read(half) for half in halves]
        if not any(read_):
            left.extend(line for half in halves for line in half)
            return
        for half, done in zip(halves, read_, strict=True):
            if not done:
                halve(half)

    # Only objects go to Arrow: a chunk whose first line is `null` crashes pyarrow 25 (a segmentation fault).
    objects = [(number, line) for number, line in numbered if line.lstrip().startswith("{") and line.rstrip().endswith("}")]
    if len(objects) < len(numbered):
        kept = {number for number, _line in objects}
        left.extend((number, line) for number, line in numbered if number not in kept)
    if objects and not read(objects):
        halve(objects)
    left.sort()
    return parts, left


def _read_common(model: ScoringModel, lines: _LineColumns, as_of: datetime | None) -> _CommonLeads:
    """The leads of `lines` that are common (`zoned_times_us` times, attributes the schema reads, created by
    `as_of`), read as `read_lead` reads them; the others are left out (`positions` names those kept)."""
    schema, spec = model.schema, model.spec
    now = datetime.now(UTC)
    # `as_of` as `read_lead` takes it; None is now, and a lead created later (a client's clock ahead, scored at
    # its creation) is read alone.
    scored_at = now if as_of is None else to_utc(as_of)
    latest_us = min(_microseconds(scored_at), _microseconds(now + CLOCK_SKEW))
    n = len(lines.lead_ids)
    created_us, common = zoned_times_us(lines.created_at)
    common &= (created_us >= 0) & (created_us <= latest_us)
    counts = lines.event_counts
    lead_of = np.repeat(np.arange(n), counts)
    times_us, zoned = zoned_times_us(lines.occurred_at)
    common &= np.bincount(lead_of[~zoned], minlength=n) == 0
    attributes = lines.attributes
    common &= ~attributes.unreadable

    types, type_code = _read_types(schema, lines)
    seconds = epoch_seconds(times_us)
    created_s = epoch_seconds(created_us)
    as_of_s = int(scored_at.timestamp())
    in_common = common[lead_of]
    typed = type_code >= 0
    kept = in_common & typed & (seconds >= created_s[lead_of])

    def per_lead(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
        return np.bincount(lead_of[mask], minlength=n)

    untyped, early = per_lead(in_common & ~typed), per_lead(in_common & typed & ~kept)
    future, n_kept = per_lead(kept & (seconds > as_of_s)), per_lead(kept)
    unknown_of, unknown_code = _unknown_types(spec, types, lead_of[kept], type_code[kept], n)
    at = np.flatnonzero(common)
    positions: list[int] = at.tolist()
    # Leads repeat a few cases (nothing to say, the same attributes missing): each case's warnings made once.
    case_columns = np.stack([untyped, early, future, n_kept, unknown_code, attributes.names_sent], axis=1)[at]
    cases, first_of, case_of = np.unique(case_columns, axis=0, return_index=True, return_inverse=True) if len(at) else (case_columns, at, at)
    expected = set(spec.attribute_columns())
    made = []
    for (n_untyped, n_early, n_future, n_seen, unknown, _names), first in zip(cases.tolist(), first_of.tolist(), strict=True):
        i = positions[first]
        missing = sorted(expected.difference(attributes.given[i]))
        made.append(read_warnings(spec, n_untyped, n_early, n_future, n_seen, unknown_of[unknown], [], attributes.extra[i], missing))
    warnings = [made[k] for k in case_of.reshape(-1).tolist()]
    codes = type_code[kept]
    every = len(positions) == n
    columns = LeadColumns(
        lead_ids=lines.lead_ids if every else [lines.lead_ids[i] for i in positions],
        as_of=[scored_at] * len(positions),
        created_s=created_s[at],
        as_of_s=np.full(len(at), as_of_s, dtype=np.int64),
        attributes={c: (values if every else [values[i] for i in positions]) for c, values in _attribute_columns(spec, attributes).items()},
        event_counts=n_kept[at],
        times=seconds[kept],
        slots=type_slots(types, spec)[codes],
        properties=np.full((len(codes), len(spec.properties)), np.nan) if spec.properties else None,
        warnings=warnings,
    )
    return _CommonLeads(positions, columns, attributes, types, codes)


def _attribute_columns(spec: FeatureSpec, attributes: AttributesRead) -> dict[str, list[object]]:
    # Every attribute column of the spec (a column the schema does not declare: never given).
    n = len(attributes.given)
    return {c: attributes.columns.get(c, [None] * n) for c in spec.attribute_columns()}


def _read_types(schema: LeadSchema, lines: _LineColumns) -> tuple[list[str], NDArray[np.int64]]:
    """The interactions' types as the schema reads them (`LeadSchema.interaction_type`), once per distinct (type, channel)
    pair: (the distinct types read, sorted; each interaction's code into them, -1 for one without a type)."""
    kinds, kind_codes = lines.kinds, lines.kind_codes
    if schema.split_types:  # the channel splits some types
        channels, channel_codes = lines.channels, lines.channel_codes
        width = len(channels) + 1  # a pair's code: type * width + channel + 1 (0: no channel)
        pairs, pair_of = np.unique(kind_codes * width + channel_codes + 1, return_inverse=True)
        read = [schema.interaction_type(kinds[p // width], channels[p % width - 1] if p % width else None) for p in pairs.tolist()]
    else:
        pair_of = kind_codes
        read = [schema.interaction_type(kind) for kind in kinds]
    types = sorted({t for t in read if t is not None})
    code_of = {t: k for k, t in enumerate(types)}
    return types, np.array([-1 if t is None else code_of[t] for t in read], dtype=np.int64)[pair_of.reshape(-1)]


def _factorized(values: list[Any]) -> tuple[list[Any], NDArray[np.int64]]:
    # The distinct values (None left out) and each value's code into them (-1: None).
    array = np.empty(len(values), dtype=object)
    array[:] = values
    codes, distinct = pd.factorize(array, use_na_sentinel=True)
    return list(distinct), codes.astype(np.int64)


def _unknown_types(
    spec: FeatureSpec, types: list[str], lead_of: NDArray[np.int64], codes: NDArray[np.int64], n: int
) -> tuple[list[list[str]], NDArray[np.int64]]:
    """The sorted types outside the vocabulary among each lead's kept interactions, as (the distinct lists, the
    first one empty; each of the n leads' index into them)."""
    found: dict[int, list[str]] = {}
    if spec.interactions:
        unknown = np.array([counted_as(t, spec) is None for t in types], dtype=bool)
        outside = unknown[codes] if codes.size else np.zeros(0, dtype=bool)
        width = max(len(types), 1)
        for pair in np.unique(lead_of[outside] * width + codes[outside]).tolist():  # by lead, then by type: sorted as `types`
            found.setdefault(pair // width, []).append(types[pair % width])
    lists: dict[tuple[str, ...], int] = {(): 0}
    index = np.zeros(n, dtype=np.int64)
    for lead, listed in found.items():
        index[lead] = lists.setdefault(tuple(listed), len(lists))
    return [list(listed) for listed in lists], index


def _read_alone(model: ScoringModel, lines: Sequence[tuple[int, str]], as_of: datetime | None) -> tuple[list[tuple[int, LeadRead]], list[LineError]]:
    """Lines validated and read one by one (`LeadIn`, `read_lead`): the reads, and the lines rejected, with their errors."""
    reads, errors = [], []
    for number, line in lines:
        try:
            reads.append((number, read_lead(model, LeadIn.model_validate_json(line), as_of)))
        except (ValidationError, ValueError) as error:  # LeadRejected is a ValueError
            errors.append({"line": number, "error": str(error).splitlines()[0:3]})
    return reads, errors


def score_line_chunk(
    model: ScoringModel,
    lines: Sequence[str],
    first_number: int,
    as_of: datetime | None,
    *,
    with_reasons: bool,
    language: str = "en",
    compiled: CompileMode = CompileMode.auto,
) -> tuple[list[str], list[LineError]]:
    """Score a chunk of JSON lines: the answers as JSON (`ScoreOut.model_dump_json()`), and the lines rejected.

    Blank lines are skipped. A line that cannot be scored is not answered; its error names its
    number (`first_number` is the number of `lines[0]`) and the first lines of the message, as
    `LeadIn` validation or `read_lead` words it.

    Args:
        model: The loaded bundle.
        lines: The lines, without their line ends.
        first_number: The number of the first line in its file, from 1.
        as_of: Scoring time; None: now (a lead created a little later, a client's clock ahead, at its creation).
        with_reasons: Give reasons (exact TreeSHAP, `answers_json` and `score_read_leads`).
        language: Of the reasons: "en" or "fr".
        compiled: Without reasons, when to predict with the compiled forest (same raw scores).

    Returns:
        (one answer per scored line, in line order; the rejected lines, in line order).
    """
    numbered = [(number, line) for number, line in enumerate(lines, start=first_number) if line.strip()]
    schema = model.schema
    parts, left = _arrow_parts(schema, numbered)
    decoded, alone = [], []
    for number, line in left:
        try:
            decoded.append((number, line, _LEAD_LINE.validate_json(line)))
        except ValidationError:
            alone.append((number, line))
    if decoded:
        parts.append(([number for number, _l, _lead in decoded], _LineColumns.of_dicts(schema, [lead for _n, _l, lead in decoded])))
    text_of = dict(numbered)
    commons: list[tuple[list[int], _CommonLeads]] = []
    for numbers, columns in parts:
        common = _read_common(model, columns, as_of)
        kept = set(common.positions)
        alone += [(number, text_of[number]) for k, number in enumerate(numbers) if k not in kept]
        commons.append(([numbers[k] for k in common.positions], common))
    alone.sort()
    reads, errors = _read_alone(model, alone, as_of)
    answered: dict[int, str] = {}
    for numbers, common in commons:
        answers = answers_json(model, common.columns, compiled, with_reasons=with_reasons, language=language)
        answered.update(zip(numbers, answers, strict=True))
    scored = score_read_leads(model, [r for _n, r in reads], with_reasons=with_reasons, language=language)
    answered.update((number, out.model_dump_json()) for (number, _r), (out, _features) in zip(reads, scored, strict=True))
    return [answered[number] for number in sorted(answered)], errors
