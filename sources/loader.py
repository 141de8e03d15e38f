"""Your data, mapped onto the contract: the `data:` section of leadscore.yaml and its readers.

A `DataConfig` says where leads, interactions and attribute tables come from (CSV, Parquet, or
SQL through SQLAlchemy) and which column plays which role. `load_project_data` reads every
table in chunks, maps each chunk to contract columns at once (keeping only the columns the
config names, numbers parsed, categories as pandas categoricals), concatenates the compact
chunks and validates the result with `features.contract`, so a table never has to fit in
memory in its source form.

Two kinds of export:

* with time (`leads.created_at` given): leads and interactions become the contract's tables;
  training takes point-in-time snapshots.
* static (no `created_at`): one row per lead with the outcome as exported (a converted flag,
  pre-aggregated activity); no snapshots, no interaction features.

Feature names are the column names in snake_case ("Lead Source" -> `lead_source`) unless
`columns.rename` says otherwise; grids, reasons and scoring requests use those names.
"""

from __future__ import annotations

import codecs
import difflib
import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from features.contract import (
    ContractError,
    Dataset,
    Quarantine,
    RuleBreach,
    StaticDataset,
    ValidationReport,
    as_utc,
    validate,
    validate_static,
)
from features.schema import AttributeColumn, AttributeKind, LeadSchema, TimeRule, merged_type_map, parse_time_column
from features.snapshots import OBSERVED_UNTIL
from features.spec import FeatureSpec, PropertyAggregate
from features.vocabulary import PROPERTY_AGGREGATES, type_slug

TRUE_WORDS: tuple[str, ...] = ("1", "yes", "y", "true", "t")
FALSE_WORDS: tuple[str, ...] = ("0", "no", "n", "false", "f")
DEFAULT_CHUNK_ROWS = 100_000
# Names the mapped lead table uses for its own columns; a feature may not take them.
RESERVED_NAMES = frozenset({"lead_id", "created_at", "converted_at", "converted", "order"})
_EXAMPLES = 3
_KEY_PREFIX = "__key__"
_BAD_PREFIX = "__bad__"
_RECORDED_PREFIX = "__recorded__"
_RAW_OUTCOME = "__outcome__"
_TABLE_RECORDED_AT = "__table_recorded_at__"
# Mapped columns whose unparsable values the contract quarantines (rather than count and keep).
_CONTRACT_TARGETS = frozenset({"created_at", "converted_at", "order"})


class SourceError(ContractError):
    """A source cannot be read as configured; the message names the config key and the source."""


def feature_name_of(column: str) -> str:
    """The feature name of a source column: snake_case ASCII ("Lead Source" -> "lead_source").

    Raises:
        ValueError: The column name has no letter or digit.
    """
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", column)
    name = re.sub(r"[^0-9a-zA-Z]+", "_", spaced).strip("_").lower()
    if not name:
        raise ValueError(f"column {column!r} has no letter or digit to name a feature; give it a name in columns.rename")
    return f"f_{name}" if name[0].isdigit() else name


# -- config models ------------------------------------------------------------------------


class CsvOptions(BaseModel):
    """How a CSV file is written.

    Attributes:
        separator: Field separator ("," or ";" or "\\t").
        encoding: Text encoding; the default reads UTF-8 with or without a byte-order mark.
        decimal: Decimal mark of numeric columns ("," in most of Europe).
        thousands: Thousands separator of numeric columns, if any.
        quote: Quote character.
        line_endings: "auto" reads LF and CRLF (Windows exports); "cr" is for files whose
            lines end with a lone CR (old Mac exports).
    """

    model_config = ConfigDict(extra="forbid")

    separator: str = Field(default=",", min_length=1)
    encoding: str = "utf-8-sig"
    decimal: str = Field(default=".", min_length=1, max_length=1)
    thousands: str | None = Field(default=None, min_length=1, max_length=1)
    quote: str = Field(default='"', min_length=1, max_length=1)
    line_endings: Literal["auto", "cr"] = "auto"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError as error:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from error
        return value

    @model_validator(mode="after")
    def _marks_differ(self) -> CsvOptions:
        if self.decimal == self.separator:
            raise ValueError(f"decimal and separator are both {self.decimal!r}; a CSV with decimal commas uses separator ';'")
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError(f"thousands and decimal are both {self.decimal!r}")
        return self


class Source(BaseModel):
    """Where one table comes from: a file (CSV or Parquet) or a SQL table or query.

    A plain string (or a list of strings) is read as file paths. A relative path is read from
    the folder of the config file that names it (from the working directory when the config is
    built in code). A path may be a glob (`exports/events-*.csv.gz`); the files of a list or a
    glob are read one after the other, in the order given (a glob's matches sorted by name), as
    one table with one header. In `url`, `${NAME}` is replaced by the environment variable NAME,
    so passwords stay out of the config file.

    Attributes:
        path: A .csv, .csv.gz (.bz2, .zip, .xz, .zst), .tsv, .txt or .parquet file, a glob, or
            a list of them.
        format: "csv" or "parquet" when the suffix does not tell.
        url: SQLAlchemy URL, e.g. postgresql+psycopg2://user:${PGPASSWORD}@host/db or
            sqlite:///crm.db.
        table: Table (or schema.table) to read, with `url`.
        query: SELECT statement to read, with `url`.
        csv: CSV options.
        chunk_rows: Rows read and mapped at a time.
    """

    model_config = ConfigDict(extra="forbid")

    path: str | list[str] | None = None
    format: Literal["csv", "parquet"] | None = None
    url: str | None = None
    table: str | None = None
    query: str | None = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    chunk_rows: int = Field(default=DEFAULT_CHUNK_ROWS, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str | list):
            value = {"path": value}
        if isinstance(value, dict) and value.get("path") is not None:
            value = {**value, "path": _from_config_folder(value["path"], info)}
        return value

    @model_validator(mode="after")
    def _one_place(self) -> Source:
        if (self.path is None) == (self.url is None):
            raise ValueError("give either path (a CSV or Parquet file) or url (a SQLAlchemy database URL)")
        if self.path is not None:
            if self.table or self.query:
                raise ValueError("table and query go with url, not with path")
            if not self.patterns:
                raise ValueError("path: an empty list; give at least one file")
            kinds = {_format_from_suffix(p) for p in self.patterns}
            if self.format is None and (None in kinds or len(kinds) > 1):
                raise ValueError(f"path {self.path!r}: cannot tell one format from the suffixes; set format: csv or parquet")
        elif (self.table is None) == (self.query is None):
            raise ValueError("with url, give exactly one of table or query")
        return self

    @property
    def patterns(self) -> list[str]:
        """The paths (or globs) as given: a list, even for one path."""
        return [self.path] if isinstance(self.path, str) else list(self.path or [])

    @property
    def kind(self) -> Literal["csv", "parquet", "sql"]:
        if self.url is not None:
            return "sql"
        return self.format or _format_from_suffix(self.patterns[0]) or "csv"

    def files(self, key: str) -> list[Path]:
        """The files to read, in order: each path, a glob's matches sorted by name.

        Args:
            key: The config key of the source, for the message (e.g. "data.leads.source").

        Raises:
            SourceError: A path is not a file or a glob matches none, naming `key`.
        """
        found: list[Path] = []
        for pattern in self.patterns:
            if glob.has_magic(pattern):
                matches = sorted(Path(m) for m in glob.glob(pattern) if Path(m).is_file())
                if not matches:
                    raise SourceError(f"{key}.path: no file matches {pattern!r}")
                found.extend(matches)
            elif Path(pattern).is_file():
                found.append(Path(pattern))
            else:
                raise SourceError(f"{key}.path: {pattern}: no such file")
        return found

    def describe(self) -> str:
        """The source in words, without any password."""
        if self.path is not None:
            return self.path if isinstance(self.path, str) else ", ".join(self.path)
        import sqlalchemy as sa

        where = sa.engine.make_url(_expand_env(self.url or "", "url")).render_as_string(hide_password=True)
        return f"table {self.table} at {where}" if self.table else f"query at {where}"


CONFIG_FOLDER = "config_folder"  # the validation context's key: the folder of the config file


def _from_config_folder(path: object, info: ValidationInfo) -> object:
    """Relative paths read from the config file's folder (`load_config` passes it as context)."""
    folder = (info.context or {}).get(CONFIG_FOLDER)
    if folder is None:
        return path
    if isinstance(path, str):
        return str(Path(folder) / path) if not Path(path).is_absolute() else path
    if isinstance(path, list):
        return [_from_config_folder(p, info) for p in path]
    return path


_COMPRESSED = ("", ".gz", ".bz2", ".zip", ".xz", ".zst")


def _format_from_suffix(path: str) -> Literal["csv", "parquet"] | None:
    lower = path.lower()
    if lower.endswith(tuple(f"{s}{c}" for s in (".csv", ".tsv", ".txt") for c in _COMPRESSED)):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def _expand_env(value: str, key: str) -> str:
    expanded = os.path.expandvars(value)
    unresolved = re.findall(r"\$\{?(\w+)\}?", expanded)
    if unresolved:
        raise SourceError(f"{key}: environment variable(s) {unresolved} are not set")
    return expanded


class TimeColumn(BaseModel):
    """A timestamp column; a plain string is the column name.

    Attributes:
        column: Column name in the source.
        format: strftime format such as "%d/%m/%Y %H:%M"; none reads ISO 8601 and what pandas
            recognises.
        timezone: Zone of timestamps written without one (IANA name, e.g. Europe/Paris).
    """

    model_config = ConfigDict(extra="forbid")

    column: str = Field(min_length=1)
    format: str | None = None
    timezone: str = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _column_shorthand(cls, value: object) -> object:
        return {"column": value} if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Paris)") from error
        return value


class Outcome(BaseModel):
    """The outcome column: a flag (yes/no, 1/0, true/false) or the date the lead converted.

    The column is in the leads table, or in a table of its own (`source`: opportunities,
    deals) with any number of rows per lead: a lead converted when one of its rows is positive
    (a `date` outcome: has a date), at the earliest such row's date; a lead without a positive
    row did not convert. Rows with an empty or unknown key, and positive rows without a
    readable date, go to the quarantine file under `data.leads.outcome`.

    Attributes:
        source: The table holding the outcome, when it is not the leads table.
        key: With `source`: the leads table's column its rows refer to (default: leads.id).
        on: With `source`: its column holding that key (default: the same name as `key`).
        column: Column name.
        kind: "flag" or "date" (a date means converted; empty means not converted).
        positive: Flag values meaning converted (compared without case).
        negative: Flag values meaning not converted.
        format: strftime format of a date outcome.
        timezone: Zone of a date outcome written without one.
        date: For a flag, the column holding when the lead converted; needed when leads have a
            `created_at` (snapshots need the conversion time).
    """

    model_config = ConfigDict(extra="forbid")

    source: Source | None = None
    key: str | None = None
    on: str | None = None
    column: str = Field(min_length=1)
    kind: Literal["flag", "date"] = "flag"
    positive: list[str] = Field(default_factory=lambda: list(TRUE_WORDS), min_length=1)
    negative: list[str] = Field(default_factory=lambda: list(FALSE_WORDS), min_length=1)
    format: str | None = None
    timezone: str = "UTC"
    date: TimeColumn | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Outcome:
        both = {v.strip().lower() for v in self.positive} & {v.strip().lower() for v in self.negative}
        if both:
            raise ValueError(f"positive and negative share the value(s) {sorted(both)}")
        if self.kind == "date" and self.date is not None:
            raise ValueError("date is for a flag outcome; a date outcome is its own date")
        if self.kind == "flag" and self.format is not None:
            raise ValueError("format is for a date outcome; for a flag, set positive/negative values")
        TimeColumn(column=self.column, timezone=self.timezone)  # checks the zone name
        if self.source is None and (self.key is not None or self.on is not None):
            raise ValueError("key and on join an outcome table: give its source, or leave them out for a column of the leads table")
        return self

    @property
    def in_own_table(self) -> bool:
        return self.source is not None

    def as_time_column(self) -> TimeColumn:
        return TimeColumn(column=self.column, format=self.format, timezone=self.timezone)


class RowNumber(BaseModel):
    """`{row_number: true}`: the row's position in the export (1 for the first data row).

    For an export without an id column, or one written in time order with no date column
    (the row order is then the only clock): `id: {row_number: true}` names leads `row-1`,
    `row-2`, ...; `order: {row_number: true}` makes the ordered split follow the file.
    """

    model_config = ConfigDict(extra="forbid")

    row_number: Literal[True]


ROW_ID_PREFIX = "row-"


class OrderColumn(BaseModel):
    """`leads.order` as a column: numbers (a lead number), or dates when `format` or `kind: date` says so.

    Attributes:
        column: Column name.
        kind: "number", or "date" (ordered by time; read as `TimeColumn` reads).
        format: strftime format of a date order (implies kind: date).
        timezone: Zone of dates written without one.
    """

    model_config = ConfigDict(extra="forbid")

    column: str = Field(min_length=1)
    kind: Literal["number", "date"] = "number"
    format: str | None = None
    timezone: str = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _date_when_formatted(cls, value: object) -> object:
        if isinstance(value, dict) and value.get("format") and "kind" not in value:
            return {**value, "kind": "date"}
        return value

    def as_time_column(self) -> TimeColumn:
        return TimeColumn(column=self.column, format=self.format, timezone=self.timezone)


class ObservedUntil(BaseModel):
    """Until when the export records a lead's interactions (`leads.observed_until`).

    Either a column (the lead's own end, e.g. the last sync), or `days_after_created` for an
    export cut to a window ("each lead's events of its first 30 days"). No snapshot of a lead
    is taken after it, so a lead whose record stops does not look as if it went quiet. It bounds
    the events, not the outcome: the outcome column or table is read as complete up to the
    export, and labels mature against the data end (`features.snapshots`), so a 30-day window
    with a 90-day horizon trains, and a deal won on day 75 labels the day-30 snapshot 1.

    Attributes:
        column: Column of the leads table holding the time (with `format`, `timezone`).
        format: strftime format of the column.
        timezone: Zone of times written without one.
        days_after_created: The window's length from the lead's creation.
    """

    model_config = ConfigDict(extra="forbid")

    column: str | None = None
    format: str | None = None
    timezone: str = "UTC"
    days_after_created: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _column_shorthand(cls, value: object) -> object:
        return {"column": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_way(self) -> ObservedUntil:
        if (self.column is None) == (self.days_after_created is None):
            raise ValueError("give either column (the lead's own end) or days_after_created (a window from creation)")
        return self

    def as_time_column(self) -> TimeColumn:
        assert self.column is not None
        return TimeColumn(column=self.column, format=self.format, timezone=self.timezone)


class LeadsTable(BaseModel):
    """The table with one row per lead.

    Attributes:
        source: Where it is.
        id: Column with the lead's unique id, or `{row_number: true}` (`RowNumber`).
        created_at: When the lead was created; leave out for a static export.
        outcome: The outcome column.
        order: Static exports only: a column that grows with acquisition order (a lead number;
            a date with `{column: ..., format: ...}` or `kind: date`), or `{row_number: true}`
            for an export written in time order; evaluation then tests on the last 20 % by that
            order.
        observed_until: Exports with time: until when each lead's interactions are recorded
            (`ObservedUntil`); no snapshot is taken after it.
        account_id: Column with the lead's account (its company): the contacts of one buying
            group share it, and `leadscore train` then also trains the account model.
    """

    model_config = ConfigDict(extra="forbid")

    source: Source
    id: Annotated[str, Field(min_length=1)] | RowNumber
    created_at: TimeColumn | None = None
    outcome: Outcome
    order: str | OrderColumn | RowNumber | None = None
    observed_until: ObservedUntil | None = None
    account_id: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("order", mode="before")
    @classmethod
    def _order_shorthand(cls, value: object) -> object:
        return {"column": value} if isinstance(value, str) else value

    @property
    def id_column(self) -> str | None:
        """The id column's name; None when the id is the row number."""
        return self.id if isinstance(self.id, str) else None

    @property
    def order_column(self) -> str | None:
        """The order column's name; None without an order or when it is the row number."""
        return self.order.column if isinstance(self.order, OrderColumn) else None

    def order_name(self) -> str:
        """The order in words, for reports ("Lead Number", "row number")."""
        if isinstance(self.order, RowNumber):
            return "row number"
        return self.order.column if isinstance(self.order, OrderColumn) else "order"


class ColumnRoles(BaseModel):
    """What each lead column is.

    Attributes:
        categorical: Columns used as categories (from the leads table or an attribute table).
        numeric: Columns used as numbers.
        exclude: Columns deliberately not used (documents the choice; they are never read).
        post_outcome: Categorical or numeric columns filled in after the outcome (e.g. a status
            set by sales). The leakage guard reports them and training leaves them out unless
            `--allow-column` keeps one.
        email: Column with the email address (only its domain kind becomes a feature).
        missing_values: Values meaning "missing" in any attribute column (e.g. "Select").
        rename: Column -> feature name, for columns whose snake_case name is not wanted.
        recorded_at: Column -> the timestamp column telling when its value was last set. The
            leakage guard flags a column whose value was set after the snapshot or outcome.
    """

    model_config = ConfigDict(extra="forbid")

    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    post_outcome: list[str] = Field(default_factory=list)
    email: str | None = None
    missing_values: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    recorded_at: dict[str, TimeColumn] = Field(default_factory=dict)


class EventProperty(BaseModel):
    """A numeric column of an event table, aggregated per window into features; a plain string is the column.

    Attributes:
        column: Column name in the source (read by the lead schema's number rule, with the
            source's CSV decimal and thousands marks).
        aggregate: Which aggregates become features: "sum", "max" or both.
    """

    model_config = ConfigDict(extra="forbid")

    column: str = Field(min_length=1)
    aggregate: list[PropertyAggregate] = Field(default_factory=lambda: _every_aggregate(), min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _column_shorthand(cls, value: object) -> object:
        return {"column": value} if isinstance(value, str) else value

    @field_validator("aggregate")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"aggregate lists {value}: each of {list(PROPERTY_AGGREGATES)} at most once")
        return value


def _every_aggregate() -> list[PropertyAggregate]:
    return ["sum", "max"]


# Columns of the mapped interactions a property may not be named after.
_INTERACTION_COLUMNS = frozenset({"lead_id", "occurred_at", "type", "channel"})


class InteractionTable(BaseModel):
    """One event table; all of them are unioned into the interactions.

    Attributes:
        source: Where it is.
        lead_id: Column holding the lead id (as in the leads table's id column).
        occurred_at: When the event happened.
        type: Column holding the event type; or
        type_constant: the one type of every row (an "email opens" table).
        type_map: Source value -> interaction type (e.g. "Email Opened": email_open); values
            not listed are kept as they are and counted as other events.
        channel: Optional column holding the channel.
        properties: Property name (snake_case; features are named after it, `sum_pages_7d`)
            -> a numeric column of this table and its aggregates (`EventProperty`).
        split_by: A categorical column whose values split each type of this table into
            "<type>__<value>" types (`email_click__newsletter`); it is the events' channel, so a
            served interaction's `channel` splits it the same way. Splits rarer than the
            vocabulary's `min_events` count as their type.
    """

    model_config = ConfigDict(extra="forbid")

    source: Source
    lead_id: str = Field(min_length=1)
    occurred_at: TimeColumn
    type: str | None = None
    type_constant: str | None = None
    type_map: dict[str, str] = Field(default_factory=dict)
    channel: str | None = None
    properties: dict[str, EventProperty] = Field(default_factory=dict)
    split_by: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_type(self) -> InteractionTable:
        if (self.type is None) == (self.type_constant is None):
            raise ValueError("give exactly one of type (a column) or type_constant (one type for every row)")
        if self.type_map and self.type is None:
            raise ValueError("type_map maps the values of the type column; it needs type, not type_constant")
        if self.split_by is not None and self.channel is not None and self.split_by != self.channel:
            raise ValueError(
                f"split_by: {self.split_by!r} and channel: {self.channel!r}: the split column is the events' channel; give one of them"
            )
        for name, prop in self.properties.items():
            if type_slug(name) != name or name in _INTERACTION_COLUMNS:
                raise ValueError(f"properties.{name}: a property name is snake_case and not one of {sorted(_INTERACTION_COLUMNS)} (e.g. {type_slug(name)!r})")
            roles = {self.lead_id: "lead_id", self.occurred_at.column: "occurred_at", self.type: "type", self.split_by or self.channel: "split_by/channel"}
            if prop.column in roles:
                raise ValueError(f"properties.{name}.column: {prop.column!r} is this table's {roles[prop.column]} column")
        columns = [p.column for p in self.properties.values()]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"properties: column(s) {repeated} used by two properties")
        return self

    @property
    def channel_column(self) -> str | None:
        """The column mapped to the events' channel: `split_by`, else `channel`."""
        return self.split_by or self.channel


class AttributeTable(BaseModel):
    """A table joined onto leads by a key (accounts, contacts).

    Attributes:
        source: Where it is.
        key: Column of the leads table holding the key.
        on: Column of this table matching `key` (default: the same name).
        columns: Columns to bring onto each lead (declared in columns.categorical/numeric
            under their name with `prefix`).
        prefix: Put before each brought column's name (e.g. "account ").
        recorded_at: When each row was last updated; the leakage guard flags the table's
            columns when rows were updated after the snapshot or outcome.
    """

    model_config = ConfigDict(extra="forbid")

    source: Source
    key: str = Field(min_length=1)
    on: str | None = None
    columns: list[str] = Field(min_length=1)
    prefix: str = ""
    recorded_at: TimeColumn | None = None

    @property
    def table_key(self) -> str:
        return self.on or self.key


class DataConfig(BaseModel):
    """The `data:` section: how your export maps onto leadscore's contract.

    Attributes:
        leads: The table with one row per lead.
        columns: What each lead column is.
        interactions: Event tables, unioned.
        attributes: Tables joined onto leads by a key.
        exported_at: When the export was taken (ISO 8601; without a zone read as UTC; a date
            alone is 00:00 UTC of that day). It is the data end: label windows mature against
            it and every row dated after it is quarantined. Left out, the data ends at the
            latest lead creation (never at the latest event, which one stray date could move).
    """

    model_config = ConfigDict(extra="forbid")

    leads: LeadsTable
    columns: ColumnRoles = Field(default_factory=ColumnRoles)
    interactions: list[InteractionTable] = Field(default_factory=list)
    attributes: list[AttributeTable] = Field(default_factory=list)
    exported_at: datetime | None = None

    @property
    def is_static(self) -> bool:
        """No lead creation time: train on the export as it is, without snapshots."""
        return self.leads.created_at is None

    @model_validator(mode="after")
    def _roles_are_consistent(self) -> DataConfig:
        cols = self.columns
        if self.is_static and self.interactions:
            raise ValueError(
                "interactions: event tables need leads.created_at (features are counted up to a "
                "point in time); give leads.created_at or remove interactions for a static export"
            )
        if not self.is_static and self.leads.order is not None:
            raise ValueError("leads.order: only for a static export; with leads.created_at the split is by creation time")
        if self.is_static and self.leads.observed_until is not None:
            raise ValueError("leads.observed_until: for an export with time (leads.created_at); a static export has no snapshots")
        outcome = self.leads.outcome
        if outcome.in_own_table and outcome.key is None and self.leads.id_column is None:
            raise ValueError("leads.outcome.key: the leads have no id column (row numbers); name the leads column the outcome table refers to")
        if not self.is_static and self.leads.outcome.kind == "flag" and self.leads.outcome.date is None:
            raise ValueError(
                "leads.outcome.date: a flag outcome needs the column telling when the lead converted "
                "when leads.created_at is given; or use kind: date, or remove created_at to train on "
                "the export as static"
            )
        _no_repeats(cols.categorical, "columns.categorical")
        _no_repeats(cols.numeric, "columns.numeric")
        both = sorted(set(cols.categorical) & set(cols.numeric))
        if both:
            raise ValueError(f"columns.categorical and columns.numeric both list {both}; a column has one type")
        declared = set(cols.categorical) | set(cols.numeric)
        for key, listed in (("columns.post_outcome", cols.post_outcome), ("columns.recorded_at", list(cols.recorded_at))):
            undeclared = [n for n in listed if n not in declared]
            if undeclared:
                raise ValueError(f"{key}: {undeclared} not declared in columns.categorical or columns.numeric (declare the type there)")
        roles = {} if self.leads.outcome.in_own_table else {self.leads.outcome.column: "leads.outcome.column"}
        if self.leads.id_column is not None:
            roles[self.leads.id_column] = "leads.id"
        if cols.email:
            roles[cols.email] = "columns.email"
        clash = [f"{c!r} ({roles[c]})" for c in declared if c in roles]
        if clash:
            raise ValueError(f"columns.categorical/numeric list {', '.join(clash)}; a column has one role")
        excluded_used = sorted(set(cols.exclude) & (declared | set(roles)))
        if excluded_used:
            raise ValueError(f"columns.exclude lists {excluded_used}, which another key uses")
        unknown_renames = sorted(set(cols.rename) - declared - ({cols.email} if cols.email else set()))
        if unknown_renames:
            raise ValueError(f"columns.rename: {unknown_renames} not declared in columns.categorical, numeric or email")
        names: dict[str, str] = {}
        for column in [*cols.categorical, *cols.numeric, *([cols.email] if cols.email else [])]:
            name = self.feature_name(column)
            if name in RESERVED_NAMES:
                raise ValueError(f"column {column!r} would be named {name!r}, which leadscore uses; rename it in columns.rename")
            if name in names:
                raise ValueError(
                    f"columns {names[name]!r} and {column!r} both become feature {name!r}; give one a name in columns.rename"
                )
            names[name] = column
        aggregates: dict[str, tuple[str, list[str]]] = {}
        for i, events in enumerate(self.interactions):
            for name, prop in events.properties.items():
                if name in aggregates and sorted(aggregates[name][1]) != sorted(prop.aggregate):
                    first, wanted = aggregates[name]
                    raise ValueError(
                        f"interactions.{i}.properties.{name}.aggregate: {prop.aggregate}, but {first} gives {wanted}; "
                        "a property aggregates one way over all its events"
                    )
                aggregates.setdefault(name, (f"interactions.{i}.properties.{name}", list(prop.aggregate)))
        for i, table in enumerate(self.attributes):
            brought = [table.prefix + c for c in table.columns]
            undeclared = [c for c in brought if c not in declared]
            if undeclared:
                raise ValueError(
                    f"attributes.{i}.columns: {undeclared} not declared in columns.categorical or columns.numeric"
                )
        return self

    def feature_name(self, column: str) -> str:
        """The feature name of a lead column: its `columns.rename` entry, else snake_case."""
        return self.columns.rename.get(column) or feature_name_of(column)

    def post_outcome_features(self) -> list[str]:
        """Features filled in after the outcome: `columns.post_outcome`, and every column brought
        from the outcome's own table (an opportunity's amount or stage is known once it exists)."""
        columns = list(self.columns.post_outcome)
        outcome_source = self.leads.outcome.source
        if outcome_source is not None:
            for table in self.attributes:
                if table.source.patterns == outcome_source.patterns and table.source.url == outcome_source.url:
                    columns += [table.prefix + c for c in table.columns if table.prefix + c not in columns]
        return [self.feature_name(c) for c in columns]

    def feature_spec(self, base: FeatureSpec) -> FeatureSpec:
        """`base` (interaction settings) with this export's attribute columns.

        Raises:
            pydantic.ValidationError: A feature name clashes with a derived feature name.
        """
        cols = self.columns
        return FeatureSpec.model_validate(
            {
                **base.model_dump(),
                "categorical": [self.feature_name(c) for c in cols.categorical],
                "numeric": [self.feature_name(c) for c in cols.numeric],
                "email_column": self.feature_name(cols.email) if cols.email else None,
                "interactions": not self.is_static,
                "properties": self.event_properties(),
            }
        )

    def event_properties(self) -> dict[str, list[PropertyAggregate]]:
        """Property -> its aggregates, over every event table that declares it."""
        return {name: list(prop.aggregate) for table in self.interactions for name, prop in table.properties.items()}

    def lead_schema(self) -> LeadSchema:
        """How this export's raw lead values are read, for training and serving alike.

        Names as exported and as features, kinds, `columns.missing_values`, the decimal and
        thousands marks of each column's CSV source, the zone of naive creation and
        interaction times, and the interaction tables' type maps (merged).

        Raises:
            ValueError: Two event tables map one exported type to different types.
        """
        cols = self.columns

        def column(name: str, kind: AttributeKind) -> AttributeColumn:
            source = self._source_of(name)
            options = source.csv if source.kind == "csv" else None
            return AttributeColumn(
                source=name, name=self.feature_name(name), kind=kind,
                decimal=options.decimal if options else ".", thousands=options.thousands if options else None,
            )

        zones = {t.occurred_at.timezone for t in self.interactions} or {"UTC"}
        created = self.leads.created_at
        return LeadSchema(
            attributes=[column(c, "category") for c in cols.categorical]
            + [column(c, "number") for c in cols.numeric]
            + ([column(cols.email, "email")] if cols.email else []),
            missing_values=list(cols.missing_values),
            created_at=TimeRule(source=created.column, timezone=created.timezone, format=created.format)
            if created is not None
            else TimeRule(source="created_at"),
            interaction_timezone=zones.pop() if len(zones) == 1 else None,
            type_map=merged_type_map((f"data.interactions.{i}", t.type_map) for i, t in enumerate(self.interactions)),
            event_properties=self._event_property_columns(),
        )

    def _event_property_columns(self) -> list[AttributeColumn]:
        """How each event property is read: its column and its source's number marks.

        Raises:
            ValueError: Two tables read one property with different number marks (a served
                interaction does not say which table it is from).
        """
        columns: dict[str, tuple[str, AttributeColumn]] = {}
        for i, table in enumerate(self.interactions):
            options = table.source.csv if table.source.kind == "csv" else None
            for name, prop in table.properties.items():
                column = AttributeColumn(
                    source=prop.column, name=name, kind="number",
                    decimal=options.decimal if options else ".", thousands=options.thousands if options else None,
                )
                key = f"data.interactions.{i}.properties.{name}"
                if name in columns and (columns[name][1].decimal, columns[name][1].thousands) != (column.decimal, column.thousands):
                    raise ValueError(f"{key}: read with other number marks than {columns[name][0]}; a served value says no table")
                columns.setdefault(name, (key, column))
        return [column for _, column in columns.values()]

    def _source_of(self, column: str) -> Source:
        """The source a declared column is read from: an attribute table's, else the leads'."""
        for table in self.attributes:
            if column in {table.prefix + c for c in table.columns}:
                return table.source
        return self.leads.source


def _no_repeats(values: Sequence[str], key: str) -> None:
    repeated = sorted({v for v in values if list(values).count(v) > 1})
    if repeated:
        raise ValueError(f"{key} lists {repeated} more than once")


# -- mapping one chunk --------------------------------------------------------------------

ColumnKind = Literal["text", "category", "email", "number", "time", "flag", "type"]


@dataclass(frozen=True)
class ColumnPlan:
    """One source column and what it becomes in the mapped table.

    Attributes:
        source: Column name in the source.
        target: Column name in the mapped table.
        kind: How values are parsed.
        key: The config key that named the column (for error messages).
        time: Parsing of a "time" column.
        outcome: Values of a "flag" column.
        type_map: Value map of a "type" column.
    """

    source: str
    target: str
    kind: ColumnKind
    key: str
    time: TimeColumn | None = None
    outcome: Outcome | None = None
    type_map: dict[str, str] = field(default_factory=dict)


def _text(values: pd.Series, missing: Sequence[str] = ()) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text.isin(["", *missing]))


def parse_times(values: pd.Series, spec: TimeColumn) -> tuple[pd.Series, pd.Series]:
    """Timestamps in UTC, and the mask of non-empty values that did not parse.

    Naive timestamps are read in `spec.timezone`; zoned ones are converted
    (`features.schema.parse_time_column`, the rule the served path follows too).
    """
    return parse_time_column(values, spec.timezone, spec.format)


def parse_numbers(
    values: pd.Series, options: CsvOptions | None, missing: Sequence[str] = ()
) -> tuple[pd.Series, pd.Series]:
    """float64 numbers (decimal and thousands marks of a CSV applied), and the mask of bad values.

    A bad value (not a number, or infinite) becomes NaN. The rule is the lead schema's
    (`features.schema.LeadSchema.normalise_column`), which the served path follows too.
    """
    return _value_rules(missing).normalise_column(values, _number_column(options))


def _value_rules(missing: Sequence[str], type_map: dict[str, str] | None = None) -> LeadSchema:
    # The lead schema's rules with this table's missing tokens (and type map): the values
    # `DataConfig.lead_schema` declares for the bundle.
    return LeadSchema(missing_values=list(missing), type_map=dict(type_map or {}))


def _number_column(options: CsvOptions | None) -> AttributeColumn:
    return AttributeColumn(
        source="number", name="number", kind="number",
        decimal=options.decimal if options is not None else ".", thousands=options.thousands if options is not None else None,
    )


_TEXT_COLUMN = AttributeColumn(source="text", name="text", kind="category")


def parse_flags(values: pd.Series, outcome: Outcome) -> pd.Series:
    """1.0 for a positive value, 0.0 for a negative one, NaN otherwise (case-insensitive)."""
    text = values.astype("string").str.strip().str.lower()
    text = text.str.replace(r"^([01])\.0*$", r"\1", regex=True)  # 1.0 from a float column
    positive = {v.strip().lower() for v in outcome.positive}
    negative = {v.strip().lower() for v in outcome.negative}
    flags = pd.Series(np.nan, index=values.index, dtype="float64")
    flags[text.isin(positive).fillna(False).astype(bool)] = 1.0
    flags[text.isin(negative).fillna(False).astype(bool)] = 0.0
    return flags


def map_chunk(
    chunk: pd.DataFrame, plan: Sequence[ColumnPlan], options: CsvOptions | None, missing: Sequence[str]
) -> pd.DataFrame:
    """Map one chunk of a source to its target columns.

    Args:
        chunk: Rows as read (text for CSV, typed for Parquet and SQL).
        plan: The columns to keep and how to parse them.
        options: CSV options (decimal marks) for text numbers; None for typed sources.
        missing: Values meaning missing in category and number columns.

    Returns:
        One column per plan entry (categories as pandas categoricals, numbers float64, times
        UTC, flags 1.0/0.0/NaN), plus a boolean `__bad__<target>` column for each number or
        time column with values that did not parse, and `__outcome__` (the raw text) for a flag.
    """
    out: dict[str, pd.Series] = {}
    for column in plan:
        values = chunk[column.source]
        if column.kind == "text":
            out[column.target] = _text(values)
        elif column.kind in ("category", "email"):
            out[column.target] = _value_rules(missing).normalise_column(values, _TEXT_COLUMN)[0]
        elif column.kind == "type":
            out[column.target] = _value_rules((), column.type_map).interaction_type_column(values)
        elif column.kind == "number":
            out[column.target], bad = parse_numbers(values, options, missing)
            if bad.any():
                out[_BAD_PREFIX + column.target] = bad
        elif column.kind == "time":
            assert column.time is not None
            out[column.target], bad = parse_times(values, column.time)
            if bad.any():
                out[_BAD_PREFIX + column.target] = bad
        else:
            assert column.outcome is not None
            out[column.target] = parse_flags(values, column.outcome)
            out[_RAW_OUTCOME] = _text(values).astype("category")
    return pd.DataFrame(out, index=chunk.index)


def concat_chunks(parts: Sequence[pd.DataFrame], plan: Sequence[ColumnPlan]) -> pd.DataFrame:
    """Concatenate mapped chunks, keeping categorical columns categorical (union of levels)."""
    if not parts:
        return pd.DataFrame({c.target: pd.Series(dtype=_empty_dtype(c.kind)) for c in plan})
    categorical = [c for c in parts[0].columns if isinstance(parts[0][c].dtype, pd.CategoricalDtype)]
    frame = pd.concat([p.drop(columns=categorical) for p in parts], ignore_index=True)
    for column in categorical:
        frame[column] = union_categoricals([_object_levels(p[column]) for p in parts], ignore_order=True)
    for column in [c for c in frame.columns if c.startswith(_BAD_PREFIX)]:
        frame[column] = frame[column].astype("boolean").fillna(False).astype(bool)
    return frame


def _object_levels(values: pd.Series) -> pd.Categorical:
    # Chunks may type their levels differently (str, string, object when empty); union needs one.
    categorical = values.array
    return pd.Categorical.from_codes(categorical.codes, categories=pd.Index(categorical.categories, dtype=object))


def _empty_dtype(kind: ColumnKind) -> str:
    return {"number": "float64", "flag": "float64", "time": "datetime64[ns, UTC]", "category": "category", "type": "category"}.get(
        kind, "string"
    )


# -- reading sources ----------------------------------------------------------------------


def source_columns(source: Source, key: str = "data") -> list[str]:
    """Column names of a source (of its first file), read without reading its rows.

    Raises:
        SourceError: A file is missing, naming `key`.
    """
    if source.kind == "sql":
        import sqlalchemy as sa

        engine = sa.create_engine(_expand_env(source.url or "", "url"))
        try:
            with engine.connect() as connection:
                return list(connection.execute(_sql_select(source, None).limit(0)).keys())
        finally:
            engine.dispose()
    return _file_columns(source, source.files(key)[0], key)


def _file_columns(source: Source, path: Path, key: str = "data") -> list[str]:
    """The column names of one file of `source`.

    Raises:
        SourceError: A CSV file without even a header, naming `key` and the file.
    """
    if source.kind == "csv":
        try:
            header = pd.read_csv(path, nrows=0, **_csv_kwargs(source.csv))
        except pd.errors.EmptyDataError:
            raise SourceError(f"{key} ({path}): no header and no rows: nothing to read") from None
        return [str(c) for c in header.columns]
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(path).schema_arrow.names)


def iter_source_chunks(source: Source, columns: Sequence[str], key: str = "data") -> Iterator[pd.DataFrame]:
    """The source's rows, `source.chunk_rows` at a time, with only `columns`, file after file.

    CSV is read as text (the mapping parses it, compression read from the suffix); Parquet and
    SQL keep their types.
    """
    columns = list(dict.fromkeys(columns))
    if source.kind == "sql":
        import sqlalchemy as sa

        engine = sa.create_engine(_expand_env(source.url or "", "url"))
        try:
            # Server-side cursor where the driver has one (psycopg2): rows arrive chunk by chunk.
            with engine.connect().execution_options(stream_results=True, max_row_buffer=source.chunk_rows) as connection:
                yield from pd.read_sql(_sql_select(source, columns), connection, chunksize=source.chunk_rows)
        finally:
            engine.dispose()
        return
    for path in source.files(key):
        if source.kind == "csv":
            with pd.read_csv(
                path,
                usecols=columns,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                chunksize=source.chunk_rows,
                **_csv_kwargs(source.csv),
            ) as reader:
                yield from reader
        else:
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=source.chunk_rows, columns=columns):
                yield batch.to_pandas()


def _csv_kwargs(options: CsvOptions) -> dict[str, object]:
    kwargs: dict[str, object] = {"sep": options.separator, "encoding": options.encoding, "quotechar": options.quote}
    if options.line_endings == "cr":
        kwargs["lineterminator"] = "\r"
    return kwargs


def _sql_select(source: Source, columns: Sequence[str] | None):
    import sqlalchemy as sa

    origin: sa.FromClause
    if source.table is not None:
        schema, _, name = source.table.rpartition(".")
        origin = sa.table(name, *[sa.column(c) for c in columns or []], schema=schema or None)
    else:
        origin = sa.text(source.query or "").columns(*[sa.column(c) for c in columns or []]).subquery("leadscore_source")
    if columns is None:
        return sa.select(sa.literal_column("*")).select_from(origin)
    return sa.select(*[origin.c[c] for c in columns])


def _read_errors(source: Source) -> tuple[type[Exception], ...]:
    """What a reader of this kind raises on a bad file, query or connection (re-raised with the key)."""
    if source.kind == "sql":
        import sqlalchemy as sa

        return (sa.exc.SQLAlchemyError, OSError, ValueError)
    return (OSError, ValueError)  # pandas' ParserError, UnicodeDecodeError and pyarrow's errors are ValueErrors


def read_mapped(source: Source, plan: Sequence[ColumnPlan], missing: Sequence[str], what: str) -> tuple[pd.DataFrame, list[str]]:
    """Read a source chunk by chunk, mapping each chunk at once.

    Args:
        source: Where the table is.
        plan: Columns to keep and how to parse them.
        missing: Values meaning missing in category and number columns.
        what: The config key of the table, for messages (e.g. "data.leads").

    Returns:
        The mapped table (see `map_chunk`) and the source columns the plan does not use.

    Raises:
        SourceError: The source is unreadable or lacks a column the plan names.
    """
    errors = _read_errors(source)
    key = f"{what}.source"
    try:
        if source.kind == "sql":
            headers = [(source.describe(), source_columns(source, key))]
        else:
            headers = [(str(path), _file_columns(source, path, key)) for path in source.files(key)]
    except SourceError:
        raise
    except errors as error:
        raise SourceError(f"{key} ({source.describe()}): cannot read it: {error}") from error
    available = headers[0][1]
    for where, columns in headers:
        missing_columns = [c for c in plan if c.source not in columns]
        if missing_columns:
            lines = []
            for c in missing_columns:
                close = difflib.get_close_matches(c.source, columns, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                lines.append(f"{c.key}: no column {c.source!r} in {where}{hint}")
            raise SourceError("\n".join(lines) + f"\n  columns found: {columns}")
    options = source.csv if source.kind == "csv" else None
    parts = []
    try:
        for chunk in iter_source_chunks(source, [c.source for c in plan], key):
            parts.append(map_chunk(chunk, plan, options, missing))
    except errors as error:
        hint = f"; check {what}.source.csv options" if source.kind == "csv" else ""
        raise SourceError(f"{what}.source ({source.describe()}): {error}{hint}") from error
    used = {c.source for c in plan}
    return concat_chunks(parts, plan), [c for c in available if c not in used]


# -- the whole export ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectData:
    """A user's export, mapped and validated.

    Attributes:
        dataset: `Dataset` (with time) or `StaticDataset`.
        recorded_at: `lead_id` plus, per feature whose value date is known (columns.recorded_at
            or an attribute table's recorded_at), a UTC timestamp column named after the feature.
        post_outcome: Features the config marks as filled in after the outcome.
        unused_columns: Config key of a table -> source columns no key uses.
        sources: Config key of a table -> the source in words.
    """

    dataset: Dataset | StaticDataset
    recorded_at: pd.DataFrame
    post_outcome: list[str]
    unused_columns: dict[str, list[str]]
    sources: dict[str, str]

    @property
    def is_static(self) -> bool:
        return isinstance(self.dataset, StaticDataset)

    @property
    def timed_dataset(self) -> Dataset:
        """`dataset` of an export with time (leads.created_at).

        Raises:
            TypeError: The export is static.
        """
        if not isinstance(self.dataset, Dataset):
            raise TypeError("the export is static (no leads.created_at): it has no dataset with time")
        return self.dataset

    @property
    def static_dataset(self) -> StaticDataset:
        """`dataset` of a static export (no leads.created_at).

        Raises:
            TypeError: The export has time.
        """
        if not isinstance(self.dataset, StaticDataset):
            raise TypeError("the export has time (leads.created_at): it is not a static dataset")
        return self.dataset


def _lead_plan(data: DataConfig) -> list[ColumnPlan]:
    leads, cols = data.leads, data.columns
    plan = [ColumnPlan(leads.id_column, "lead_id", "text", "data.leads.id")] if leads.id_column is not None else []
    if leads.created_at is not None:
        plan.append(ColumnPlan(leads.created_at.column, "created_at", "time", "data.leads.created_at", time=leads.created_at))
    outcome = leads.outcome
    if outcome.in_own_table:
        if outcome.key is not None and outcome.key != leads.id_column:
            plan.append(ColumnPlan(outcome.key, _OUTCOME_KEY, "text", "data.leads.outcome.key"))
    else:
        plan.extend(_outcome_plan(outcome, "data.leads.outcome"))
    if isinstance(leads.order, OrderColumn):
        if leads.order.kind == "date":
            plan.append(ColumnPlan(leads.order.column, "order", "time", "data.leads.order", time=leads.order.as_time_column()))
        else:
            plan.append(ColumnPlan(leads.order.column, "order", "number", "data.leads.order"))
    observed = leads.observed_until
    if observed is not None and observed.column is not None:
        plan.append(ColumnPlan(observed.column, OBSERVED_UNTIL, "time", "data.leads.observed_until", time=observed.as_time_column()))
    if leads.account_id is not None:
        plan.append(ColumnPlan(leads.account_id, "account_id", "text", "data.leads.account_id"))
    from_tables = {t.prefix + c for t in data.attributes for c in t.columns}
    for column in cols.categorical:
        if column not in from_tables:
            plan.append(ColumnPlan(column, data.feature_name(column), "category", "data.columns.categorical"))
    for column in cols.numeric:
        if column not in from_tables:
            plan.append(ColumnPlan(column, data.feature_name(column), "number", "data.columns.numeric"))
    if cols.email:
        plan.append(ColumnPlan(cols.email, data.feature_name(cols.email), "email", "data.columns.email"))
    for column, stamp in cols.recorded_at.items():
        if column not in from_tables:
            plan.append(
                ColumnPlan(stamp.column, _RECORDED_PREFIX + data.feature_name(column), "time", f"data.columns.recorded_at.{column}", time=stamp)
            )
    for i, table in enumerate(data.attributes):
        plan.append(ColumnPlan(table.key, _KEY_PREFIX + table.key, "text", f"data.attributes.{i}.key"))
    # One source column may play two parts (a key that is also a feature): dedupe by target.
    return list({c.target: c for c in plan}.values())


_OUTCOME_KEY = "__outcome_key__"


def _outcome_plan(outcome: Outcome, key: str) -> list[ColumnPlan]:
    if outcome.kind == "date":
        return [ColumnPlan(outcome.column, "converted_at", "time", f"{key}.column", time=outcome.as_time_column())]
    plan = [ColumnPlan(outcome.column, "converted", "flag", f"{key}.column", outcome=outcome)]
    if outcome.date is not None:
        plan.append(ColumnPlan(outcome.date.column, "converted_at", "time", f"{key}.date", time=outcome.date))
    return plan


def _outcome_from_table(leads: pd.DataFrame, data: DataConfig, sources: dict[str, str], quarantine: Quarantine) -> pd.DataFrame:
    """`converted_at` (and `converted`) of each lead from the outcome's own table.

    A lead converted when one of its rows is positive (a flag among `positive`, or a date
    outcome's date), at the earliest positive row's date. Rows whose key is empty or matches no
    lead, and positive rows without a readable date, go to `quarantine` under
    `data.leads.outcome`, named by their row number in the source.
    """
    outcome, table = data.leads.outcome, "data.leads.outcome"
    assert outcome.source is not None
    lead_key = outcome.key or data.leads.id_column
    on = outcome.on or lead_key
    assert lead_key is not None and on is not None
    plan = [ColumnPlan(on, _KEY_PREFIX, "text", f"{table}.on"), *_outcome_plan(outcome, table)]
    rows, _unused = read_mapped(outcome.source, plan, data.columns.missing_values, table)
    sources[table] = outcome.source.describe()
    rows[SOURCE_ROW] = pd.Series(np.arange(1, len(rows) + 1), index=rows.index).astype(str).radd("row ")
    lead_keys = leads[_OUTCOME_KEY] if _OUTCOME_KEY in leads else leads["lead_id"]
    rows = quarantine.take(rows, rows[_KEY_PREFIX].isna(), table, f"have an empty {on!r} (no lead can match them)", example_column=SOURCE_ROW)
    rows = quarantine.take(
        rows, ~rows[_KEY_PREFIX].isin(lead_keys.dropna()), table, f"have a {on!r} that is no lead's {lead_key!r}", example_column=SOURCE_ROW
    )
    if outcome.kind == "date":
        bad = rows.get(_BAD_PREFIX + "converted_at", pd.Series(False, index=rows.index))
        rows = quarantine.take(rows, bad, table, f"have an unparsable date in {outcome.column!r}", example_column=SOURCE_ROW)
        positive = rows["converted_at"].notna()
    else:
        positive = rows["converted"] == 1
        if outcome.date is not None:
            bad = positive & rows["converted_at"].isna()
            rows = quarantine.take(
                rows, bad, table, f"are positive ({outcome.column}) but have no readable date ({outcome.date.column})", example_column=SOURCE_ROW
            )
            positive = rows["converted"] == 1
    won = rows[positive]
    first = won.groupby(_KEY_PREFIX, observed=True)["converted_at"].min() if "converted_at" in won else None
    converted_keys = set(won[_KEY_PREFIX])
    leads = leads.copy()
    if first is not None:
        leads["converted_at"] = pd.to_datetime(lead_keys.map(first), utc=True)
    if outcome.kind == "flag":
        leads["converted"] = lead_keys.isin(converted_keys).astype("float64")
    return leads.drop(columns=[_OUTCOME_KEY], errors="ignore")


def _observed_until(leads: pd.DataFrame, table: LeadsTable) -> pd.DataFrame:
    """The `observed_until` column for `days_after_created` (a column is mapped by the lead plan)."""
    observed = table.observed_until
    if observed is not None and observed.days_after_created is not None:
        leads[OBSERVED_UNTIL] = leads["created_at"] + pd.Timedelta(days=observed.days_after_created)
    return leads


def _with_row_numbers(leads: pd.DataFrame, table: LeadsTable) -> pd.DataFrame:
    """`lead_id` and `order` from the row position where the config asks (`RowNumber`), before any row is set aside."""
    position = np.arange(1, len(leads) + 1)
    if isinstance(table.id, RowNumber):
        leads.insert(0, "lead_id", pd.Series([f"{ROW_ID_PREFIX}{i}" for i in position], index=leads.index, dtype=object))
    if isinstance(table.order, RowNumber):
        leads["order"] = position.astype(np.float64)
    return leads


def _attribute_plan(data: DataConfig, i: int, table: AttributeTable) -> list[ColumnPlan]:
    numeric = set(data.columns.numeric)
    plan = [ColumnPlan(table.table_key, _KEY_PREFIX, "text", f"data.attributes.{i}.on")]
    for column in table.columns:
        name = table.prefix + column
        kind: ColumnKind = "number" if name in numeric else "category"
        plan.append(ColumnPlan(column, data.feature_name(name), kind, f"data.attributes.{i}.columns"))
    if table.recorded_at is not None:
        plan.append(ColumnPlan(table.recorded_at.column, _TABLE_RECORDED_AT, "time", f"data.attributes.{i}.recorded_at", time=table.recorded_at))
    return plan


def _interaction_plan(i: int, table: InteractionTable) -> list[ColumnPlan]:
    key = f"data.interactions.{i}"
    plan = [
        ColumnPlan(table.lead_id, "lead_id", "text", f"{key}.lead_id"),
        ColumnPlan(table.occurred_at.column, "occurred_at", "time", f"{key}.occurred_at", time=table.occurred_at),
    ]
    if table.type is not None:
        plan.append(ColumnPlan(table.type, "type", "type", f"{key}.type", type_map=table.type_map))
    if table.channel_column is not None:
        which = "split_by" if table.split_by is not None else "channel"
        plan.append(ColumnPlan(table.channel_column, "channel", "category", f"{key}.{which}"))
    for name, prop in table.properties.items():
        plan.append(ColumnPlan(prop.column, name, "number", f"{key}.properties.{name}.column"))
    return plan


class _Rejections:
    """Rows rejected while mapping, before the contract's own validation."""

    def __init__(self) -> None:
        self.report = ValidationReport()
        self.quarantine = Quarantine(self.report)

    def take(self, frame: pd.DataFrame, bad: pd.Series, rule: str) -> pd.DataFrame:
        return self.quarantine.take(frame, bad, "leads", rule).reset_index(drop=True)

    def merge_into(
        self, report: ValidationReport, quarantine: pd.DataFrame, mapping: ValidationReport
    ) -> tuple[ValidationReport, pd.DataFrame]:
        """One report and quarantine: mapping rejections, the contract's, then kept-and-counted values."""
        merged = ValidationReport(
            breaches=[*self.report.breaches, *report.breaches, *mapping.breaches],
            unknown_types=dict(report.unknown_types),
            data_end=report.data_end,
            data_end_source=report.data_end_source,
        )
        frames = [f for f in (self.quarantine.frame(), quarantine) if len(f)]
        if not frames:
            return merged, quarantine
        return merged, pd.concat(frames, ignore_index=True)


def _count_bad_values(frame: pd.DataFrame, report: ValidationReport, table: str) -> pd.DataFrame:
    """Turn the `__bad__` masks of attribute columns into kept-and-counted breaches; drop them.

    Masks of contract columns (created_at, converted_at, order) stay for the rules that
    quarantine those rows.
    """
    masks = [c for c in frame.columns if c.startswith(_BAD_PREFIX) and c[len(_BAD_PREFIX):] not in _CONTRACT_TARGETS]
    for column in masks:
        target, bad = column[len(_BAD_PREFIX):], frame[column]
        examples = frame.loc[bad, "lead_id"].astype(str).head(_EXAMPLES).tolist() if "lead_id" in frame else []
        if target.startswith(_RECORDED_PREFIX):
            rule = f"have an unparsable recorded-at time of {target.removeprefix(_RECORDED_PREFIX)}"
        elif target == OBSERVED_UNTIL:
            rule = "have an unparsable observed_until (data.leads.observed_until): snapshots of these leads are not limited"
        else:
            rule = f"have a non-numeric or infinite {target}"
        report.breaches.append(RuleBreach(table, rule, int(bad.sum()), examples, action="kept, value set to missing"))
    return frame.drop(columns=masks)


SOURCE_ROW = "source_row"


def _join_attributes(
    leads: pd.DataFrame,
    data: DataConfig,
    unused: dict[str, list[str]],
    sources: dict[str, str],
    report: ValidationReport,
    quarantine: Quarantine,
) -> pd.DataFrame:
    """Bring each attribute table's columns onto the leads by key (left join, lead order kept).

    Rows with an empty key match no lead: they go to `quarantine` under the table's config key,
    named by their row number in the source (`source_row`, 1 = the first data row).
    """
    missing = data.columns.missing_values
    for i, table in enumerate(data.attributes):
        key = f"data.attributes.{i}"
        values, unused[key] = read_mapped(table.source, _attribute_plan(data, i, table), missing, key)
        sources[key] = table.source.describe()
        values = _count_bad_values(values, report, key)
        empty_key = values[_KEY_PREFIX].isna()
        if empty_key.any():
            values[SOURCE_ROW] = pd.Series(np.arange(1, len(values) + 1), index=values.index).astype(str).radd("row ")
            # The quarantine file names the key column as the source does (unless a feature has that name).
            shown = _KEY_PREFIX if table.table_key in values.columns else table.table_key
            values = quarantine.take(
                values.rename(columns={_KEY_PREFIX: shown}), empty_key, key,
                f"have an empty {table.table_key!r} (no lead can match them)", example_column=SOURCE_ROW,
            ).drop(columns=[SOURCE_ROW]).rename(columns={shown: _KEY_PREFIX})
        repeated = values.loc[values[_KEY_PREFIX].duplicated(), _KEY_PREFIX]
        if len(repeated):
            raise SourceError(
                f"{key}: {len(repeated)} rows repeat a value of {table.table_key!r} "
                f"(e.g. {repeated.head(_EXAMPLES).tolist()}); an attribute table needs one row per key"
            )
        if _TABLE_RECORDED_AT in values:
            stamps = values.pop(_TABLE_RECORDED_AT)
            for column in table.columns:
                values[_RECORDED_PREFIX + data.feature_name(table.prefix + column)] = stamps
        lead_key = _KEY_PREFIX + table.key
        joined = leads.merge(
            values.rename(columns={_KEY_PREFIX: lead_key}), on=lead_key, how="left", validate="many_to_one", indicator=True
        )
        unmatched = (joined.pop("_merge") == "left_only") & joined[lead_key].notna()
        if unmatched.any():
            examples = joined.loc[unmatched, "lead_id"].astype(str).head(_EXAMPLES).tolist()
            report.breaches.append(
                RuleBreach("leads", f"have a {table.key} not found in {key}", int(unmatched.sum()), examples,
                           action="kept, its attributes missing")
            )
        leads = joined
    return leads.drop(columns=[c for c in leads.columns if c.startswith(_KEY_PREFIX)])


def load_project_data(data: DataConfig, spec: FeatureSpec, leads_path: Path | None = None) -> ProjectData:
    """Read every table of the `data:` section, map it onto the contract and validate it.

    Args:
        data: The data section.
        spec: The feature spec `data.feature_spec` built (declares the attribute columns).
        leads_path: Read the leads from this file instead of `data.leads.source`.

    Returns:
        The validated data with what the leakage guard needs.

    Raises:
        SourceError: A source is unreadable or lacks a configured column, or an attribute
            table has a key twice.
        ContractError: A required column is missing after mapping.
    """
    lead_source = data.leads.source
    if leads_path is not None:
        if not Path(leads_path).is_file():
            raise SourceError(f"{leads_path}: the leads export must be a file (CSV or Parquet), as data.leads.source reads")
        try:
            lead_source = Source(path=str(leads_path), format=lead_source.format, csv=lead_source.csv, chunk_rows=lead_source.chunk_rows)
        except ValidationError as error:
            raise SourceError(f"{leads_path}: {error.errors()[0]['msg']}") from error
    check_sources(data, leads_path)
    leads, unused_leads = read_mapped(lead_source, _lead_plan(data), data.columns.missing_values, "data.leads")
    if leads.empty:  # event and attribute tables may be empty; without a lead there is nothing to train on or score
        rows = "no rows, only a header" if lead_source.kind == "csv" else "no rows"
        raise SourceError(f"data.leads.source ({lead_source.describe()}): {rows}: nothing to read")
    leads = _with_row_numbers(leads, data.leads)
    leads = _ordered_by_date(leads)
    excluded = set(data.columns.exclude)
    unused = {"data.leads": [c for c in unused_leads if c not in excluded]}
    sources = {"data.leads": lead_source.describe()}
    mapping_report = ValidationReport()
    rejections = _Rejections()
    leads = _count_bad_values(leads, mapping_report, "leads")
    if data.leads.outcome.in_own_table:
        leads = _outcome_from_table(leads, data, sources, rejections.quarantine)
    leads = _join_attributes(leads, data, unused, sources, mapping_report, rejections.quarantine)
    if not data.is_static:
        leads = _observed_until(leads, data.leads)

    recorded_columns = [c for c in leads.columns if c.startswith(_RECORDED_PREFIX)]
    recorded = leads[["lead_id", *recorded_columns]].rename(columns=lambda c: c.removeprefix(_RECORDED_PREFIX))
    leads = leads.drop(columns=recorded_columns)

    leads = _reject_bad_outcomes(leads, data, rejections)
    leads = _converted_on_the_creation_day(leads, data.leads.outcome)
    # What the bundle stores: the rules the mapping above applied, for the columns `spec` reads.
    try:
        schema = data.lead_schema().for_spec(spec)
    except ValueError as error:
        raise SourceError(str(error)) from error
    exported_at = as_utc(data.exported_at) if data.exported_at is not None else None
    if data.is_static:
        if "converted" not in leads:
            leads["converted"] = leads["converted_at"].notna().astype("float64")
        static = validate_static(leads, spec, exported_at, schema=schema)
        report, quarantine = rejections.merge_into(static.report, static.quarantine, mapping_report)
        dataset: Dataset | StaticDataset = StaticDataset(leads=static.leads, quarantine=quarantine, report=report, schema=static.schema)
    else:
        interactions, split_types = _read_interactions(data, unused, sources, mapping_report)
        if split_types:
            # A new model, not model_copy: the look-up tables cached on the schema must not follow.
            schema = LeadSchema.model_validate({**schema.model_dump(), "split_types": split_types})
        timed = validate(leads.drop(columns=["converted"], errors="ignore"), interactions, spec, exported_at, schema=schema)
        report, quarantine = rejections.merge_into(timed.report, timed.quarantine, mapping_report)
        dataset = Dataset(leads=timed.leads, interactions=timed.interactions, quarantine=quarantine, report=report, end=timed.end, schema=timed.schema)
    recorded = recorded[recorded["lead_id"].isin(dataset.leads["lead_id"])].reset_index(drop=True)
    if isinstance(dataset, Dataset):
        recorded = _unset_recorded_after(recorded, dataset.data_end, f"{dataset.data_end.isoformat()} ({dataset.data_end_source})", report)
    elif exported_at is not None:
        recorded = _unset_recorded_after(recorded, exported_at, f"{exported_at.isoformat()} (exported_at)", report)
    return ProjectData(dataset, recorded, data.post_outcome_features(), unused, sources)


def check_sources(data: DataConfig, leads_path: Path | None = None) -> None:
    """Every file the `data:` section names exists (globs match), before anything is read.

    Raises:
        SourceError: Naming the config key of the first missing file.
    """
    tables: list[tuple[str, Source]] = [] if leads_path is not None else [("data.leads.source", data.leads.source)]
    if data.leads.outcome.source is not None:
        tables.append(("data.leads.outcome.source", data.leads.outcome.source))
    tables += [(f"data.interactions.{i}.source", t.source) for i, t in enumerate(data.interactions)]
    tables += [(f"data.attributes.{i}.source", t.source) for i, t in enumerate(data.attributes)]
    for key, source in tables:
        if source.kind != "sql":
            source.files(key)


def _ordered_by_date(leads: pd.DataFrame) -> pd.DataFrame:
    """A date order (`leads.order` with kind: date) as epoch seconds: the split compares numbers."""
    if "order" in leads and isinstance(leads["order"].dtype, pd.DatetimeTZDtype):
        stamps = leads["order"]
        leads["order"] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("float64")
    return leads


def _unset_recorded_after(
    recorded: pd.DataFrame, data_end: pd.Timestamp, described: str, report: ValidationReport
) -> pd.DataFrame:
    """Recorded-at times after the data end cannot be right: set to missing, counted per feature.

    The value itself stays (it is the lead's attribute); only the leakage guard's evidence of
    when it was set is dropped, so a stray date cannot make a column look post-outcome.
    """
    for column in [c for c in recorded.columns if c != "lead_id"]:
        late = recorded[column] > data_end
        if late.any():
            examples = recorded.loc[late, "lead_id"].astype(str).head(_EXAMPLES).tolist()
            report.breaches.append(
                RuleBreach("leads", f"have a recorded-at time of {column} after the data end {described}", int(late.sum()),
                           examples, action="kept, recorded-at time set to missing")
            )
            recorded[column] = recorded[column].mask(late)
    return recorded


def _converted_on_the_creation_day(leads: pd.DataFrame, outcome: Outcome) -> pd.DataFrame:
    """A conversion dated by its day alone, on the day the lead was created: at that day's end.

    A date without a time (Salesforce's `CloseDate`) reads as the day's first instant, which on
    the lead's creation day falls before its creation time, as if it converted before it
    existed. The date says only that it converted that day, after it was created: read as the
    end of that day, the lead is kept and its snapshot at creation is labelled converted. Other
    days keep the first instant (no snapshot is taken on a day the lead may have converted).

    Args:
        leads: `created_at`, `converted_at` (UTC), as mapped.
        outcome: The outcome; its time column's zone says where a day starts.

    Returns:
        `leads` with those conversions moved to the last second of their day.
    """
    time = outcome.date if outcome.kind == "flag" else outcome.as_time_column()
    if time is None or "created_at" not in leads or "converted_at" not in leads:
        return leads
    converted = leads["converted_at"].dt.tz_convert(time.timezone)
    day = converted.dt.normalize()
    creation_day = leads["created_at"].dt.tz_convert(time.timezone).dt.normalize()
    dated_by_day = (converted == day) & (day == creation_day) & (leads["converted_at"] < leads["created_at"])
    if dated_by_day.any():
        leads = leads.copy()
        day_end = day[dated_by_day] + pd.DateOffset(days=1) - pd.Timedelta(seconds=1)
        leads.loc[dated_by_day, "converted_at"] = day_end.dt.tz_convert("UTC")
    return leads


def _reject_bad_outcomes(leads: pd.DataFrame, data: DataConfig, rejections: _Rejections) -> pd.DataFrame:
    """Quarantine leads whose outcome cannot be read: unknown flag, bad date, converted without date."""
    outcome = data.leads.outcome
    if outcome.kind == "flag":
        leads = rejections.take(
            leads,
            leads["converted"].isna(),
            f"have an outcome ({outcome.column}) that is none of positive {outcome.positive} or negative {outcome.negative}",
        )
    bad_date = _BAD_PREFIX + "converted_at"
    if bad_date in leads:
        date_column = outcome.date.column if outcome.date is not None else outcome.column
        leads = rejections.take(leads, leads[bad_date], f"have an unparsable outcome date ({date_column})")
    if outcome.kind == "flag" and outcome.date is not None:
        converted = leads["converted"] == 1
        leads = rejections.take(
            leads, converted & leads["converted_at"].isna(), f"are converted but have no conversion date ({outcome.date.column})"
        )
        leads["converted_at"] = leads["converted_at"].where(leads["converted"] == 1)
    # A NaT created_at or order left by a bad value is quarantined by the contract's own rules.
    masks = [c for c in leads.columns if c.startswith(_BAD_PREFIX)]
    return leads.drop(columns=[*masks, _RAW_OUTCOME], errors="ignore")


def _read_interactions(
    data: DataConfig, unused: dict[str, list[str]], sources: dict[str, str], report: ValidationReport
) -> tuple[pd.DataFrame, list[str]]:
    """Every event table mapped to `lead_id`, `occurred_at`, `type` (and `channel`, properties), unioned.

    A property value that is no number is kept as missing and counted in `report`; the types of
    a table with `split_by` are split by its channel (`LeadSchema.interaction_type_column`).

    Returns:
        (the interactions, the types split by their channel: what the lead schema stores).

    Raises:
        SourceError: A type split in one table comes with a channel, unsplit, from another
            (a served interaction could not be read both ways).
    """
    missing = data.columns.missing_values
    parts = []
    split: dict[str, str] = {}  # split type -> the table splitting it
    for i, table in enumerate(data.interactions):
        key = f"data.interactions.{i}"
        events, unused[key] = read_mapped(table.source, _interaction_plan(i, table), missing, key)
        sources[key] = table.source.describe()
        for name, prop in table.properties.items():
            bad = events.get(_BAD_PREFIX + name)
            if bad is not None and bad.any():
                examples = events.loc[bad, "lead_id"].astype(str).head(_EXAMPLES).tolist()
                report.breaches.append(
                    RuleBreach(key, f"have a non-numeric or infinite {prop.column!r} (properties.{name})", int(bad.sum()),
                               examples, action="kept, value set to missing")
                )
        events = events.drop(columns=[c for c in events.columns if c.startswith(_BAD_PREFIX)])
        if table.type_constant is not None:
            events["type"] = pd.Categorical([table.type_constant] * len(events))
        if table.split_by is not None:
            types = sorted(str(t) for t in events["type"].dropna().unique())
            split.update({t: key for t in types if t not in split})
            events["type"] = LeadSchema(split_types=types).interaction_type_column(events["type"], events["channel"])
        parts.append(events)
    for i, (table, events) in enumerate(zip(data.interactions, parts, strict=True)):
        if table.split_by is None and "channel" in events:
            clash = events["type"].isin(list(split)) & events["channel"].notna()
            if clash.any():
                event_type = str(events.loc[clash, "type"].iloc[0])
                raise SourceError(
                    f"data.interactions.{i}: {int(clash.sum())} events of type {event_type!r} have a channel, "
                    f"which {split[event_type]}.split_by splits; a served one would be split: give this table split_by too"
                )
    if not parts:
        empty = pd.DataFrame({"lead_id": pd.Series(dtype="string"), "occurred_at": pd.Series(dtype="datetime64[ns, UTC]"), "type": pd.Series(dtype="string")})
        return empty, []
    types = union_categoricals([_object_levels(p["type"].astype("category")) for p in parts], ignore_order=True)
    events = pd.concat([p.drop(columns=["type"]) for p in parts], ignore_index=True)
    events["type"] = types
    return events, sorted(split)
