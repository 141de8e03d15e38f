"""The declared lead schema: the one normaliser of raw CRM values, for training and serving.

A `LeadSchema` says how a lead's raw values are read: each attribute column's name as exported
and its feature name, its kind (category, number, email), the tokens meaning "missing", how
numbers are written (decimal mark, thousands separator, numbers sent as text), the zone of
timestamps written without one, and the map of exported interaction types onto the vocabulary.

It is built at training time (from the `data:` section by `sources.loader.DataConfig.lead_schema`,
or from the contract's defaults by `LeadSchema.from_spec`), stored as JSON in the model bundle,
and applied by every path that reads leads:

* frames (`normalise_column`, `normalise_frame`, `parse_time_column`): the loaders' chunk mapping,
  the contract's validation and batch scoring;
* one record (`normalise_attributes`, `instant`, `interaction_type`): `POST /score`,
  `/score_batch` and `leadscore score` on JSON lines, without pandas (a lead costs microseconds).

The two forms give the same values (tests/test_schema.py checks it on generated values and on
every row of the real and simulated exports): categories and emails are read by the one scalar
rule applied once per distinct value of a column; numbers by one grammar and Python's float
parser in both. A value the schema cannot read (text that is no number, an infinite number, a
local time that a daylight-saving change makes ambiguous) is never changed silently: frames
mark it (the loaders count it as a kept-and-missing value), one record reports it as a
`SchemaProblem` naming the field (the service answers 400).

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from operator import itemgetter
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.spec import FeatureSpec
from features.vocabulary import remembered, split_type

SCHEMA_FORMAT = 1
TYPE_MEMO_SIZE = 4_096  # (type, channel) pairs whose reading a schema remembers (`interaction_types_of`)
AttributeKind = Literal["category", "number", "email"]
# The number grammar of both paths, after the thousands separator is removed and the decimal
# mark made ".": no "inf", "nan", underscores or hex, which Python's float() would also take.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ZONED = r"(?:Z|[+-]\d\d:?\d\d)$"
NOT_A_NUMBER = "must be a finite number or null, got text that is not one"
INFINITE = "must be a finite number or null, got an infinite number"
BOOLEAN = "must be a finite number or null, got a boolean"
TOO_LARGE = "must be a finite number or null, got an integer beyond float range"


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Paris)") from error
    return value


class AttributeColumn(BaseModel):
    """One lead attribute as exported, and the feature it becomes.

    Attributes:
        source: The column name in the export (e.g. "Lead Source"); a lead sent to the service
            may use it or `name`.
        name: The contract and feature name (e.g. "lead_source").
        kind: "category" (text, stripped), "number" (float) or "email" (stripped text, of which
            only the domain kind becomes a feature).
        decimal: Decimal mark of numbers written as text.
        thousands: Thousands separator of numbers written as text, if any.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    name: str = Field(min_length=1)
    kind: AttributeKind
    decimal: str = Field(default=".", min_length=1, max_length=1)
    thousands: str | None = Field(default=None, min_length=1, max_length=1)

    @model_validator(mode="after")
    def _marks_differ(self) -> AttributeColumn:
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError(f"{self.source}: thousands and decimal are both {self.decimal!r}")
        return self


class TimeRule(BaseModel):
    """How a timestamp column is read.

    Attributes:
        source: The column name in the export.
        timezone: Zone of timestamps written without one (IANA name).
        format: strftime format of the text; none reads ISO 8601 and what pandas recognises.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    timezone: str = "UTC"
    format: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _known_zone(value)


@dataclass(frozen=True)
class AttributesRead:
    """Many leads' attributes as the schema reads them (`LeadSchema.normalise_attribute_columns`).

    Attributes:
        columns: Feature name -> each lead's normalised value (None where the lead did not send it).
        given: Each lead's feature names, in the order sent (the keys of `normalise_attributes`' values).
        extra: Each lead's names that no column declares, as sent (shared lists: not to be changed).
        unreadable: Per lead, whether `normalise_attributes` reports a problem: a value the schema
            cannot read or a column sent twice (its values are then not all in `columns`).
        names_sent: Per lead, the index of the names it sent, in their order, among those of all the
            leads (int64): leads with one index have one `given` and one `extra`.
    """

    columns: dict[str, list[object]]
    given: list[tuple[str, ...]]
    extra: list[list[str]]
    unreadable: np.ndarray
    names_sent: np.ndarray

    def values(self, i: int) -> dict[str, object]:
        """Lead i's values, as `normalise_attributes` gives them."""
        return {name: self.columns[name][i] for name in self.given[i]}


@dataclass(frozen=True)
class SchemaProblem:
    """A raw value the schema cannot read.

    Attributes:
        field: The field as the client sent it, e.g. "attributes.TotalVisits".
        reason: What is wrong, without the value (it may be personal data).
    """

    field: str
    reason: str


class LeadSchema(BaseModel):
    """How raw lead values are read: the one normaliser of training and serving.

    Attributes:
        format: Version of this schema's layout.
        attributes: The attribute columns, in feature-spec order.
        missing_values: Tokens meaning "missing" in any attribute column, compared after
            stripping and without case ("Select", "select " and "SELECT" alike). The empty
            text is always missing.
        created_at: How the lead's creation time is read (its zone for naive timestamps).
        interaction_timezone: Zone of interaction times written without one; None when the
            export's event tables disagree (a naive interaction time is then refused).
        type_map: Exported interaction type -> vocabulary type (e.g. "Email Opened": email_open);
            other types are kept as they are (after stripping).
        event_properties: Numeric columns of the event tables (`data.interactions[].properties`):
            `source` the column as exported, `name` the property, with its number marks. A
            served interaction sends them in `properties` under either name.
        split_types: Types (after `type_map`) split by their channel (`split_by`): an event of
            one with a channel becomes "<type>__<channel slug>" (`features.vocabulary.split_type`).
    """

    model_config = ConfigDict(extra="forbid")

    format: int = SCHEMA_FORMAT
    attributes: list[AttributeColumn] = Field(default_factory=list)
    missing_values: list[str] = Field(default_factory=list)
    created_at: TimeRule = Field(default_factory=lambda: TimeRule(source="created_at"))
    interaction_timezone: str | None = "UTC"
    type_map: dict[str, str] = Field(default_factory=dict)
    event_properties: list[AttributeColumn] = Field(default_factory=list)
    split_types: list[str] = Field(default_factory=list)

    @field_validator("interaction_timezone")
    @classmethod
    def _interaction_zone(cls, value: str | None) -> str | None:
        return None if value is None else _known_zone(value)

    @model_validator(mode="after")
    def _one_name_each(self) -> LeadSchema:
        seen: dict[str, str] = {}
        for column in self.attributes:
            for key in dict.fromkeys((column.source, column.name)):
                if key in seen and seen[key] != column.name:
                    raise ValueError(f"attribute name {key!r} is used by two columns ({seen[key]!r} and {column.name!r})")
                seen[key] = column.name
        return self

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: FeatureSpec) -> LeadSchema:
        """The contract's defaults for a feature spec: names as in the spec, no missing tokens,
        "." decimals, UTC for naive timestamps, no type map (bundles saved before the schema
        existed load with this one)."""
        return cls(
            attributes=[AttributeColumn(source=c, name=c, kind="category") for c in spec.categorical]
            + [AttributeColumn(source=c, name=c, kind="number") for c in spec.numeric]
            + ([AttributeColumn(source=spec.email_column, name=spec.email_column, kind="email")] if spec.email_column else [])
        )

    def for_spec(self, spec: FeatureSpec) -> LeadSchema:
        """This schema with only the attributes `spec` reads (what the leakage guard kept).

        Raises:
            ValueError: The spec reads an attribute this schema does not declare, or as another kind.
        """
        wanted = {c: "category" for c in spec.categorical} | {c: "number" for c in spec.numeric}
        if spec.email_column:
            wanted[spec.email_column] = "email"
        declared = {c.name: c for c in self.attributes}
        wrong = sorted(f"{n} ({k})" for n, k in wanted.items() if n not in declared or declared[n].kind != k)
        if wrong:
            raise ValueError(f"lead schema: the feature spec reads attributes the schema does not declare so: {wrong}")
        # A new model, not model_copy: the look-up tables cached on this one must not follow.
        return LeadSchema.model_validate({**self.model_dump(), "attributes": [c.model_dump() for c in self.attributes if c.name in wanted]})

    # -- look-ups ------------------------------------------------------------------------
    @cached_property
    def _folded_missing(self) -> frozenset[str]:
        return frozenset(v.strip().casefold() for v in self.missing_values) | {""}

    @cached_property
    def _by_key(self) -> dict[str, AttributeColumn]:
        # A lead may name an attribute as exported or by its feature name.
        keys = {c.source: c for c in self.attributes}
        keys.update({c.name: c for c in self.attributes})
        return keys

    def column(self, name: str) -> AttributeColumn:
        """The attribute whose feature name or exported name is `name`.

        Raises:
            KeyError: No attribute has that name.
        """
        return self._by_key[name]

    def feature_names(self) -> list[str]:
        return [c.name for c in self.attributes]

    # -- one value (the per-record path) --------------------------------------------------
    def text(self, value: object) -> str | None:
        """A category or email value: its text stripped; None when missing or a missing token."""
        if _is_missing(value):
            return None
        text = str(value).strip()
        return None if text.casefold() in self._folded_missing else text

    def number(self, value: object, column: AttributeColumn) -> tuple[float, str | None]:
        """A number value as float64 (NaN when missing), and why it cannot be read, if it cannot.

        A value that cannot be read is NaN with a reason; the frame path marks the same values.
        """
        if _is_missing(value):
            return math.nan, None
        if isinstance(value, (bool, np.bool_)):  # float(True) is 1.0: a boolean is a mix-up, not a count
            return math.nan, BOOLEAN
        if isinstance(value, (int, float, np.integer, np.floating)):
            try:
                number = float(value)
            except OverflowError:
                return math.nan, TOO_LARGE
            return (number, None) if math.isfinite(number) else (math.nan, INFINITE)
        text = str(value).strip()
        if text.casefold() in self._folded_missing:
            return math.nan, None
        cleaned = _number_text(text, column)
        if _NUMBER.fullmatch(cleaned) is None:
            return math.nan, NOT_A_NUMBER
        number = float(cleaned)
        return (number, None) if math.isfinite(number) else (math.nan, INFINITE)

    def value(self, value: object, column: AttributeColumn) -> tuple[object, str | None]:
        """One attribute value normalised by its column's kind, and the reason it cannot be read."""
        if column.kind == "number":
            return self.number(value, column)
        return self.text(value), None

    def normalise_attributes(
        self, attributes: Mapping[str, object], prefix: str = "attributes"
    ) -> tuple[dict[str, object], list[str], list[SchemaProblem]]:
        """One lead's attributes, keyed by feature name and normalised: the per-record path.

        Args:
            attributes: As sent: keys are feature names or the export's column names.
            prefix: Field path of `attributes` in the request, for problems.

        Returns:
            (feature name -> value: str or None for categories and emails, float with NaN for
            missing numbers; keys of `attributes` the schema does not declare; problems, one per
            value that cannot be read or attribute given twice).
        """
        return _read_keyed(attributes, self._by_key, self.value, prefix)

    def normalise_attribute_columns(self, many: Sequence[Mapping[str, object]]) -> AttributesRead:
        """`normalise_attributes` of many leads, in columns: each lead's values, names sent and problems as it gives them.

        Leads of one export send the same names in the same order: each such set of names is
        looked up once, and each distinct text of a column read once (numbers and other values
        each time: 0.0 and -0.0 are equal keys, but not one category).

        Args:
            many: Each lead's attributes, as for `normalise_attributes`.

        Returns:
            The leads' `AttributesRead`.
        """
        n = len(many)
        columns: dict[str, list[object]] = {c.name: [None] * n for c in self.attributes}
        given: list[tuple[str, ...]] = [()] * n
        extra: list[list[str]] = [[]] * n
        unreadable = np.zeros(n, dtype=bool)
        by_names: dict[tuple[str, ...], list[int]] = {}
        for i, attributes in enumerate(many):
            by_names.setdefault(tuple(attributes), []).append(i)
        names_sent = np.zeros(n, dtype=np.int64)
        for k, leads in enumerate(by_names.values()):
            names_sent[leads] = k
        read_texts: dict[str, dict[str, tuple[object, str | None]]] = {c.name: {} for c in self.attributes}
        for keys, leads in by_names.items():
            declared = [(key, self._by_key[key]) for key in keys if key in self._by_key]
            names = tuple(column.name for _key, column in declared)
            if len(set(names)) < len(names):  # an attribute sent under both its names: a problem for each lead
                unreadable[leads] = True
                continue
            sent = [many[i] for i in leads]
            everyone = len(leads) == n  # then lead k of the group is lead k
            for key, column in declared:
                raws = list(map(itemgetter(key), sent))
                texts = read_texts[column.name]
                if set(map(type, raws)) == {str}:  # the common column: its texts, each read once
                    for text in set(raws).difference(texts):
                        texts[text] = self.value(text, column)
                    reads = list(map(texts.__getitem__, raws))
                else:
                    reads = [texts[raw] if type(raw) is str and raw in texts else self.value(raw, column) for raw in raws]
                read_values = [value for value, _reason in reads]
                if everyone:
                    columns[column.name] = read_values
                else:
                    values = columns[column.name]
                    for i, value in zip(leads, read_values, strict=True):
                        values[i] = value
                for k in [k for k, (_value, reason) in enumerate(reads) if reason is not None]:
                    unreadable[leads[k]] = True
            unknown = [key for key in keys if key not in self._by_key]
            for i in leads:
                given[i], extra[i] = names, unknown
        return AttributesRead(columns, given, extra, unreadable, names_sent)

    def normalise_attribute_arrays(self, n: int, sent: Sequence[tuple[str, pa.Array, NDArray[np.bool_]]]) -> AttributesRead:
        """`normalise_attribute_columns` of n leads whose attributes come in Arrow arrays, one per key, in the order sent.

        JSON lines read by pyarrow (`model.lines`): each key's values are text, integer or boolean
        for any attribute, float only for numbers (a float category would read 3 and 3.0 alike),
        or null; with each key, which leads sent it (a lead that did not send it has a null there).
        Each distinct text is read once; numbers are converted in numpy, as `number` converts them.

        Args:
            n: How many leads.
            sent: (key as sent: a feature or export name the schema declares, its n values, which leads sent it).

        Returns:
            The leads' `AttributesRead`.

        Raises:
            ValueError: A key the schema does not declare, an attribute sent under both its
                names, or a type other than those above.
        """
        columns: dict[str, list[object]] = {c.name: [None] * n for c in self.attributes}
        unreadable = np.zeros(n, dtype=bool)
        names: list[str] = []
        for key, array, by in sent:
            column = self._by_key.get(key)
            if column is None or column.name in names or len(array) != n or len(by) != n:
                raise ValueError(f"attributes.{key}: undeclared, sent twice or of another length")
            names.append(column.name)
            kind = array.type
            if column.kind == "number" and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                numbers = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)  # null: NaN, as `number` reads None
                finite = np.isfinite(numbers) | np.isnan(numbers)
                unreadable |= ~finite & by  # `number` says INFINITE (JSON lines reach here finite)
                values = np.where(finite, numbers, math.nan).astype(object)
            elif pa.types.is_string(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind):
                encoded = array.dictionary_encode() if not pa.types.is_null(kind) else None
                distinct = encoded.dictionary.to_pylist() if encoded is not None else []
                reads = [self.value(raw, column) for raw in [*distinct, None]]  # the last: a null sent
                codes: NDArray[np.int64] = (
                    np.full(n, len(distinct), dtype=np.int64)
                    if encoded is None
                    else np.asarray(encoded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False), dtype=np.int64)
                )
                read_values = np.empty(len(reads), dtype=object)
                read_values[:] = [value for value, _reason in reads]
                values = read_values[codes]
                unreadable |= np.array([reason is not None for _value, reason in reads], dtype=bool)[codes] & by
            else:
                raise ValueError(f"attributes.{key}: values of type {kind} are not read here")
            values[~by] = None
            columns[column.name] = values.tolist()
        # Each lead's names sent: one pattern of keys per distinct row of `by`s.
        patterns, names_sent = np.unique(np.stack([by for _key, _array, by in sent], axis=1), axis=0, return_inverse=True) if sent else (
            np.ones((1, 0), dtype=bool), np.zeros(n, dtype=np.int64))  # fmt: skip
        given_of = [tuple(name for name, sent_it in zip(names, row, strict=True) if sent_it) for row in patterns.tolist()]
        names_sent = np.asarray(names_sent, dtype=np.int64).reshape(-1)
        return AttributesRead(columns, [given_of[k] for k in names_sent.tolist()], [[]] * n, unreadable, names_sent)

    def instant(self, value: datetime, rule: TimeRule | None = None, zone: str | None = "UTC") -> tuple[datetime | None, str | None]:
        """A timestamp in UTC: zoned ones converted, naive ones read in the rule's (or `zone`'s) zone.

        Returns:
            (the UTC datetime, None), or (None, why) for a naive time that a daylight-saving
            change makes ambiguous or nonexistent in its zone, or that has no zone to be read in,
            or a time whose UTC falls outside the years 1 to 9999.
        """
        try:
            return self._instant(value, rule, zone)
        except OverflowError:  # 0001-01-01T00:00:00 read at +14:00 falls before year 1 in UTC
            return None, "is out of range: in UTC it falls outside the years 1 to 9999"

    def _instant(self, value: datetime, rule: TimeRule | None, zone: str | None) -> tuple[datetime | None, str | None]:
        if value.tzinfo is not None:
            return value.astimezone(UTC), None
        name = rule.timezone if rule is not None else zone
        if name is None:
            return None, "has no zone, and the training data read times without one in several zones: give its offset"
        if name == "UTC":
            return value.replace(tzinfo=UTC), None
        tz = ZoneInfo(name)
        early, late = value.replace(tzinfo=tz, fold=0), value.replace(tzinfo=tz, fold=1)
        if early.utcoffset() != late.utcoffset():
            return None, f"falls in a daylight-saving change of {name} (ambiguous or nonexistent there): give its offset"
        return early.astimezone(UTC), None

    def interaction_type(self, value: object, channel: object = None) -> str | None:
        """An interaction type: stripped, mapped by `type_map`, split by `channel`; None when empty.

        Args:
            value: The type as exported or sent.
            channel: The event's channel; splits a type of `split_types` when not missing
                (read as a category: stripped, missing tokens are missing).
        """
        if _is_missing(value):
            return None
        text = str(value).strip()
        if not text:
            return None
        mapped = self.type_map.get(text, text)
        if mapped in self._split:
            split_by = self.text(channel)
            if split_by is not None:
                return split_type(mapped, split_by)
        return mapped

    def interaction_types_of(self, pairs: Iterable[tuple[str, str | None]]) -> dict[tuple[str, str | None], str | None]:
        """`interaction_type` of each (type, channel) pair, each read once per schema.

        A served model reads the same few pairs on every request: the first `TYPE_MEMO_SIZE`
        distinct pairs are remembered, any later one is read every time (a client sending made-up
        types cannot grow the memory).
        """
        return remembered(self._type_memo, pairs, lambda pair: self.interaction_type(*pair), TYPE_MEMO_SIZE)

    @cached_property
    def _type_memo(self) -> dict[tuple[str, str | None], str | None]:
        return {}

    @cached_property
    def _split(self) -> frozenset[str]:
        return frozenset(self.split_types)

    @cached_property
    def _property_by_key(self) -> dict[str, AttributeColumn]:
        keys = {c.source: c for c in self.event_properties}
        keys.update({c.name: c for c in self.event_properties})
        return keys

    def normalise_event_properties(
        self, properties: Mapping[str, object], prefix: str = "properties"
    ) -> tuple[dict[str, float], list[str], list[SchemaProblem]]:
        """One event's property values, keyed by property name, read by the number rule.

        Args:
            properties: As sent: keys are property names or the export's column names.
            prefix: Field path of `properties` in the request, for problems.

        Returns:
            (property -> float, NaN when missing; keys the schema does not declare; problems,
            one per value that cannot be read or property given twice).
        """
        return _read_keyed(properties, self._property_by_key, self.number, prefix)

    # -- frames (the vectorised path) -----------------------------------------------------
    def normalise_column(self, values: pd.Series, column: AttributeColumn) -> tuple[pd.Series, pd.Series]:
        """One attribute column normalised, and the mask of values that cannot be read.

        Args:
            values: The column as read (text from CSV; typed from Parquet and SQL; already
                normalised is fine: the rules are idempotent).
            column: Its declaration.

        Returns:
            (categories and emails as a pandas categorical of str levels, numbers as float64
            with NaN for missing or unreadable; bool mask of the unreadable values).
        """
        if column.kind == "number":
            return self._number_column(values, column)
        return _by_distinct_value(values, self.text), pd.Series(False, index=values.index)

    def _number_column(self, values: pd.Series, column: AttributeColumn) -> tuple[pd.Series, pd.Series]:
        if pd.api.types.is_bool_dtype(values.dtype) or (
            pd.api.types.is_numeric_dtype(values.dtype) and not isinstance(values.dtype, pd.CategoricalDtype)
        ):
            # A typed column (Parquet, SQL): a boolean column is 0/1 there, as the database meant.
            numbers = values.astype("float64")
            bad = pd.Series(np.isinf(numbers.to_numpy()), index=values.index)
            return numbers.mask(bad), bad
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            # Mixed values (numbers, booleans and text in one object column): the scalar rule
            # on each value, so equal to the per-record path by construction.
            read = [self.number(v, column) for v in values.to_numpy(dtype=object)]
            numbers = pd.Series(np.array([n for n, _ in read], dtype=np.float64), index=values.index)
            bad = pd.Series(np.array([r is not None for _, r in read], dtype=bool), index=values.index)
            return numbers, bad
        # Text (CSV): one pass of Python's own string methods and float parser over the column.
        text = pd.Series(values.to_numpy(dtype=object, na_value=None), index=values.index, dtype=object)
        text = text[text.notna()].str.strip()
        cleaned = text[~text.str.casefold().isin(self._folded_missing)]
        if column.thousands:
            cleaned = cleaned.str.replace(column.thousands, "", regex=False)
        if column.decimal != ".":
            cleaned = cleaned.str.replace(column.decimal, ".", regex=False)
        grammar = cleaned.str.fullmatch(_NUMBER.pattern).astype(bool)
        numbers = pd.Series(np.nan, index=values.index, dtype="float64")
        numbers[cleaned.index[grammar]] = cleaned[grammar].to_numpy(dtype=object).astype(np.float64)
        bad = pd.Series(False, index=values.index)
        bad[cleaned.index[~grammar]] = True
        infinite = np.isinf(numbers.to_numpy())
        bad |= infinite
        return numbers.mask(infinite), bad.astype(bool)

    def normalise_frame(self, leads: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
        """Every declared attribute of a contract-format table (columns named by feature name).

        Args:
            leads: A table with a column per `attributes[].name` (other columns are kept as they are).

        Returns:
            (the table with those columns normalised: categories and emails as object arrays of
            str or None, numbers float64; feature name -> mask of unreadable values, for the
            columns that have any).
        """
        out = leads.copy()
        bad_masks: dict[str, pd.Series] = {}
        for column in self.attributes:
            values, bad = self.normalise_column(leads[column.name], column)
            if column.kind != "number":
                # Levels then None, picked by the categorical's codes (-1, missing, picks the None).
                levels = np.append(np.asarray(values.cat.categories, dtype=object), np.array([None], dtype=object))
                values = pd.Series(levels[values.cat.codes.to_numpy()], index=values.index, dtype=object)
            out[column.name] = values
            if bad.any():
                bad_masks[column.name] = bad
        return out, bad_masks

    def interaction_type_column(self, values: pd.Series, channels: pd.Series | None = None) -> pd.Series:
        """`interaction_type` over a column, once per distinct value (or (type, channel) pair).

        Args:
            values: The types.
            channels: The events' channels, aligned; None (or no `split_types`): no split.

        Returns:
            A categorical of str levels.
        """
        types = _by_distinct_value(values, self.interaction_type)
        if channels is None or not self.split_types:
            return types
        channel_text = _by_distinct_value(channels, self.text)
        split = (types.isin(self.split_types) & channel_text.notna()).to_numpy()
        if not split.any():
            return types
        # The rule of `interaction_type` once per distinct (type, channel) pair.
        pairs = pd.MultiIndex.from_arrays([types[split].astype(object), channel_text[split].astype(object)])
        codes, uniques = pd.factorize(pairs)
        out = types.astype(object)
        out[split] = np.array([split_type(t, c) for t, c in uniques], dtype=object)[codes]
        return out.astype("category")

    def event_property_column(self, values: pd.Series, name: str) -> tuple[pd.Series, pd.Series]:
        """One event property column read by the number rule, and the mask of unreadable values.

        Raises:
            KeyError: `name` is no declared event property.
        """
        return self._number_column(values, self._property_by_key[name])


def lead_schema_for(spec: FeatureSpec, schema: LeadSchema | None = None) -> LeadSchema:
    """`schema` restricted to the attributes `spec` reads; the contract's defaults for `spec` when None.

    Raises:
        ValueError: `schema` does not declare an attribute of `spec` (or as another kind).
    """
    return (schema if schema is not None else LeadSchema.from_spec(spec)).for_spec(spec)


def parse_time_column(values: pd.Series, timezone: str = "UTC", format: str | None = None) -> tuple[pd.Series, pd.Series]:
    """Timestamps in UTC, and the mask of non-empty values that did not parse.

    Naive timestamps are read in `timezone` (a daylight-saving ambiguity is NaT, and marked);
    zoned ones ("Z", "+00:00", "+0200") are converted. A time whose UTC falls outside what a
    frame holds (`within_frame_range`) is NaT, and marked, like text that is no time.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        utc = within_frame_range(values.dt.tz_convert("UTC"))
        return utc, utc.isna() & values.notna()
    if pd.api.types.is_datetime64_dtype(values.dtype):
        local = values.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
        utc = within_frame_range(local.dt.tz_convert("UTC"))
        return utc, utc.isna() & values.notna()
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    fmt = format or "mixed"
    zoned = text.str.contains(_ZONED, regex=True).fillna(False).astype(bool)
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if zoned.any():
        parsed[zoned] = within_frame_range(pd.to_datetime(text[zoned], errors="coerce", format=fmt, utc=True))
    if (~zoned).any():
        naive = pd.to_datetime(text[~zoned], errors="coerce", format=fmt)
        if not isinstance(naive.dtype, pd.DatetimeTZDtype):  # a %z in `format` gives zoned values
            naive = naive.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
        parsed[~zoned] = within_frame_range(naive.dt.tz_convert("UTC"))
    return parsed, parsed.isna() & text.notna()


# What a frame of times holds: pandas' nanosecond timestamps, 1677-09-21 to 2262-04-11 in UTC.
# pandas 3 parses text and reads Parquet into microseconds (years 1 to 9999, and beyond once a
# zone moves them: 0001-01-01T00:00:00+14:00), which a nanosecond column cannot take and Python
# cannot always hold; a lead or an event dated there is a typo, read as a time that is not one.
FRAME_EARLIEST = pd.Timestamp.min.tz_localize("UTC")
FRAME_LATEST = pd.Timestamp.max.tz_localize("UTC")


def within_frame_range(stamps: pd.Series) -> pd.Series:
    """UTC timestamps in nanoseconds, NaT where they fall outside `FRAME_EARLIEST` to `FRAME_LATEST`."""
    inside = (stamps >= FRAME_EARLIEST) & (stamps <= FRAME_LATEST)
    return stamps.where(inside).dt.as_unit("ns")


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, (float, np.floating)) and value != value)


def _number_text(text: str, column: AttributeColumn) -> str:
    if column.thousands:
        text = text.replace(column.thousands, "")
    if column.decimal != ".":
        text = text.replace(column.decimal, ".")
    return text


def _by_distinct_value(values: pd.Series, rule: Callable[[object], str | None]) -> pd.Series:
    # The scalar rule once per distinct value (a CRM column has few), spread by code: the values
    # of the per-record path by construction, without a Python call per row. Only where
    # distinct means distinct text: factorize takes 0, 0.0, -0.0 and False for one value, which
    # str() tells apart, so mixed and float columns get the rule on each value.
    if _hashes_as_text(values):
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    else:
        uniques = values.to_numpy(dtype=object)
        codes = np.arange(len(uniques))
    mapped = [rule(u) for u in np.asarray(uniques, dtype=object)] + [None]
    levels = pd.Index(sorted({m for m in mapped if m is not None}), dtype=object)
    position = {level: i for i, level in enumerate(levels)}
    table = np.array([position[m] if m is not None else -1 for m in mapped], dtype=np.int64)
    return pd.Series(pd.Categorical.from_codes(table[codes], categories=levels), index=values.index)


def _hashes_as_text(values: pd.Series) -> bool:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(dtype.categories, skipna=True) in ("string", "empty")
    if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return True
    return pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")


def merged_type_map(maps: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, str]:
    """One type map from several event tables' maps.

    Args:
        maps: (config key of the table, its type map) pairs.

    Raises:
        ValueError: Two tables map one exported type to different vocabulary types (a served
            interaction does not say which table it is from).
    """
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, type_map in maps:
        for source, target in type_map.items():
            source = source.strip()
            if source in merged and merged[source] != target:
                raise ValueError(
                    f"{key}.type_map maps {source!r} to {target!r}, {origin[source]}.type_map to {merged[source]!r}: "
                    "a served interaction does not say which table it is from; map it one way"
                )
            merged[source], origin[source] = target, key
    return merged


_Read = TypeVar("_Read")


def _read_keyed(
    given: Mapping[str, object],
    by_key: Mapping[str, AttributeColumn],
    read: Callable[[object, AttributeColumn], tuple[_Read, str | None]],
    prefix: str,
) -> tuple[dict[str, _Read], list[str], list[SchemaProblem]]:
    """Values sent under a column's feature name or its export name, each read by `read`.

    Returns:
        (feature name -> value; keys no column declares; problems: a value `read` cannot read,
        or a column sent under both of its names).
    """
    values: dict[str, _Read] = {}
    given_as: dict[str, str] = {}
    unknown: list[str] = []
    problems: list[SchemaProblem] = []
    for key, raw in given.items():
        column = by_key.get(key)
        if column is None:
            unknown.append(key)
            continue
        if column.name in given_as:
            problems.append(
                SchemaProblem(f"{prefix}.{key}", f"gives {column.name!r} again (also sent as {given_as[column.name]!r}); send it once")
            )
            continue
        given_as[column.name] = key
        value, reason = read(raw, column)
        if reason is not None:
            problems.append(SchemaProblem(f"{prefix}.{key}", reason))
        values[column.name] = value
    return values, unknown, problems
