"""The data contract: what leads and interactions look like, checked on load.

Leads: `lead_id` (unique), `created_at` (timestamp), the attribute columns of the
`FeatureSpec`, an optional nullable `converted_at`, and an optional nullable `account_id` (the
lead's company: contacts sharing it form a buying group, `features.accounts`). Interactions: `lead_id`,
`occurred_at`, `type`, optional `channel`. Timestamps without a zone are read as UTC; all are
stored in UTC.

Time is declared, not guessed from the rows: the data ends at the export time (`exported_at`)
when it is given, else at the latest lead creation. A stray timestamp years ahead must not
move it, so every row dated after the data end (a lead created or converted, an interaction)
is quarantined under its own rule.

Rows that break a rule are never dropped silently: they are moved to a quarantine frame with
the rule they broke, and the `ValidationReport` names each rule with its count and a few
example ids. Repeated interactions (same lead, type and time) are collapsed to the first one;
the others go to the quarantine frame too, counted as collapsed. Missing required columns are
an error (nothing can be checked without them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from features.schema import LeadSchema, lead_schema_for, within_frame_range
from features.spec import FeatureSpec

LEAD_REQUIRED: tuple[str, ...] = ("lead_id", "created_at")
ACCOUNT_ID = "account_id"  # optional lead column (features.accounts)
INTERACTION_REQUIRED: tuple[str, ...] = ("lead_id", "occurred_at", "type")
_EXAMPLES = 3
QUARANTINED = "quarantined"
COLLAPSED = "collapsed, the first of each kept"
# Rows of these breaches leave the data and are written to the quarantine frame.
_REMOVING_ACTIONS = frozenset({QUARANTINED, COLLAPSED})
EXPORTED_AT = "exported_at"
LATEST_LEAD_CREATION = "latest lead creation"


class ContractError(ValueError):
    """The data cannot be read under the contract at all (e.g. a required column is missing)."""


@dataclass(frozen=True)
class RuleBreach:
    """Rows of one table that broke one rule.

    Attributes:
        table: "leads" or "interactions".
        rule: The rule, in words.
        count: How many rows.
        examples: A few lead ids of those rows (row numbers for a table without lead ids).
        action: What was done: "quarantined", "collapsed, the first of each kept" (repeated
            rows, the others set aside) or "kept, ..." (kept rows are counted, e.g. a bad
            attribute value set to missing).
    """

    table: str
    rule: str
    count: int
    examples: list[str]
    action: str = QUARANTINED

    def __str__(self) -> str:
        return (
            f"{self.table}: {self.count} row(s) that {self.rule} ({self.action}; "
            f"e.g. {', '.join(self.examples)})"
        )


@dataclass
class ValidationReport:
    """Everything validation found, for the console, MLflow and the quarantine file."""

    breaches: list[RuleBreach] = field(default_factory=list)
    unknown_types: dict[str, int] = field(default_factory=dict)
    data_end: str | None = None
    data_end_source: str | None = None

    @property
    def quarantined_rows(self) -> int:
        """Rows moved to the quarantine frame (quarantined, or collapsed repeats)."""
        return sum(b.count for b in self.breaches if b.action in _REMOVING_ACTIONS)

    def data_end_line(self) -> str | None:
        """When the data ends and what says so, in words (None before validation set it)."""
        if self.data_end is None:
            return None
        return f"data end: {self.data_end} ({self.data_end_source}); rows dated after it are quarantined"

    def lines(self) -> list[str]:
        """The data end, then every breach and the unknown types, one line each."""
        end = self.data_end_line()
        out = [] if end is None else [end]
        out.extend(str(b) for b in self.breaches)
        if self.unknown_types:
            listed = ", ".join(f"{t} ({n})" for t, n in sorted(self.unknown_types.items()))
            out.append(f"interactions: types outside the vocabulary (features.interaction_types), kept and counted as other events: {listed}")
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "breaches": [b.__dict__ for b in self.breaches],
            "unknown_types": dict(self.unknown_types),
            "quarantined_rows": self.quarantined_rows,
            "data_end": self.data_end,
            "data_end_source": self.data_end_source,
        }


@dataclass(frozen=True)
class DataEnd:
    """When the data ends, and what says so.

    Attributes:
        at: The data end (UTC).
        source: "exported_at" (declared), "latest lead creation" (derived), or another phrase
            naming where it came from (e.g. a backtest cutoff).
    """

    at: pd.Timestamp
    source: str


@dataclass(frozen=True)
class Dataset:
    """Validated leads and interactions, with what validation set aside.

    Attributes:
        leads: `lead_id` (str), `created_at`, `converted_at` (UTC, NaT when not converted) and
            attribute columns.
        interactions: `lead_id` (str), `occurred_at` (UTC), `type` (str), `channel` when given;
            sorted by lead_id then occurred_at.
        quarantine: Rejected rows of both tables with columns `table`, `rule`, `lead_id` and
            the raw values as text.
        report: The rule breaches and unknown-type counts.
        end: When the data ends and why (set by `validate`); None means the latest lead
            creation of `leads`.
        schema: The lead schema the attributes were normalised by (the bundle stores it);
            None for tables built without `validate`.
    """

    leads: pd.DataFrame
    interactions: pd.DataFrame
    quarantine: pd.DataFrame
    report: ValidationReport
    end: DataEnd | None = None
    schema: LeadSchema | None = None

    @property
    def data_end(self) -> pd.Timestamp:
        """The export time: declared (`exported_at`), else the latest lead creation.

        Never the latest event: one interaction dated years ahead would otherwise count every
        unmatured label window as a non-conversion.
        """
        return self.end.at if self.end is not None else self.leads["created_at"].max()

    @property
    def data_end_source(self) -> str:
        """What defines `data_end`: "exported_at", "latest lead creation", ..."""
        return self.end.source if self.end is not None else LATEST_LEAD_CREATION


def parse_utc(values: pd.Series) -> pd.Series:
    """Parse timestamps (ISO 8601 or what pandas recognises) into UTC; failures become NaT.

    Naive timestamps are read as UTC; zoned ones are converted to UTC. A time a frame cannot
    hold (`features.schema.within_frame_range`, e.g. 0001-01-01T00:00:00+14:00) is a failure too.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return within_frame_range(values.dt.tz_convert("UTC"))
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return within_frame_range(values.dt.tz_localize("UTC"))
    text = values.astype("string").str.strip()
    return within_frame_range(pd.to_datetime(text, utc=True, errors="coerce", format="mixed"))


def _require_columns(frame: pd.DataFrame, required: list[str], table: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ContractError(
            f"{table}: missing required columns {missing}; found {list(frame.columns)}"
        )


class Quarantine:
    """Collects rejected rows and their rule while validation goes on."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        self.parts: list[pd.DataFrame] = []

    def take(
        self,
        frame: pd.DataFrame,
        bad: pd.Series,
        table: str,
        rule: str,
        *,
        action: str = QUARANTINED,
        example_column: str = "lead_id",
    ) -> pd.DataFrame:
        """Move the `bad` rows of `frame` to the quarantine and count them under `rule`.

        Args:
            frame: Rows being validated.
            bad: True for the rows to set aside.
            table: The table in words ("leads", "data.attributes.0").
            rule: What the rows did, in words ("occurred after the data end ...").
            action: `QUARANTINED`, or `COLLAPSED` for repeats of a kept row.
            example_column: Column whose values name the examples (a row number for a table
                without lead ids).

        Returns:
            `frame` without the bad rows.
        """
        bad = bad.fillna(False).astype(bool)
        if not bad.any():
            return frame
        rejected = frame[bad]
        examples = rejected[example_column].astype(str).drop_duplicates().head(_EXAMPLES).tolist()
        self.report.breaches.append(RuleBreach(table, rule, int(bad.sum()), examples, action))
        part = rejected.astype("string").assign(table=table, rule=rule)
        self.parts.append(part)
        return frame[~bad]

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame(columns=["table", "rule", "lead_id"])
        merged = pd.concat(self.parts, ignore_index=True)
        first = ["table", "rule", "lead_id"]
        # reindex: rows of an attribute table have no lead_id column of their own.
        return merged.reindex(columns=first + [c for c in merged.columns if c not in first])


def _normalise_attributes(leads: pd.DataFrame, schema: LeadSchema, report: ValidationReport) -> pd.DataFrame:
    """The lead schema's normalisation of every attribute (`LeadSchema.normalise_frame`).

    Numbers become float64 (a value the schema cannot read becomes missing, counted),
    categories and emails str or None.
    """
    leads, bad_values = schema.normalise_frame(leads)
    for column, bad in bad_values.items():
        # One bad attribute does not cost the lead: the value becomes missing, counted.
        examples = leads.loc[bad, "lead_id"].astype(str).head(_EXAMPLES).tolist()
        report.breaches.append(
            RuleBreach("leads", f"have a non-numeric or infinite {column}", int(bad.sum()),
                       examples, action="kept, value set to missing")
        )
    return leads.reset_index(drop=True)


def _schema_for(spec: FeatureSpec, schema: LeadSchema | None) -> LeadSchema:
    try:
        return lead_schema_for(spec, schema)
    except ValueError as error:
        raise ContractError(str(error)) from error


def as_utc(when: datetime | pd.Timestamp | str) -> pd.Timestamp:
    """A point in time as a UTC timestamp; one written without a zone is read as UTC."""
    stamp = pd.Timestamp(when)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def validate(
    leads_raw: pd.DataFrame,
    interactions_raw: pd.DataFrame,
    spec: FeatureSpec,
    exported_at: datetime | pd.Timestamp | str | DataEnd | None = None,
    *,
    schema: LeadSchema | None = None,
) -> Dataset:
    """Check raw tables against the contract; quarantine rows that break a rule.

    Args:
        leads_raw: Leads as read: `lead_id`, `created_at`, optional `converted_at`, and every
            column of `spec.attribute_columns()`.
        interactions_raw: Interactions as read: `lead_id`, `occurred_at`, `type`, optional
            `channel`.
        spec: Declares the attribute columns and the interaction vocabulary.
        exported_at: When the export was taken: the data end. None derives it as the latest
            `created_at` of the leads that pass the rules above the time rules. A `DataEnd`
            is a data end found beforehand, with what says so (e.g. the latest lead creation
            of a whole folder validated part by part, `sources.partitioned`).
        schema: How raw attribute values are read (`features.schema.LeadSchema`, by feature
            name); None takes the contract's defaults for `spec`.

    Returns:
        The validated `Dataset`, its `end` saying which data end was used, its `schema` the
        lead schema applied (restricted to `spec`), which the model bundle stores.

    Raises:
        ContractError: A required or declared column is missing, or `schema` does not declare
            an attribute of `spec`.
    """
    schema = _schema_for(spec, schema)
    report = ValidationReport()
    quarantine = Quarantine(report)

    _require_columns(leads_raw, [*LEAD_REQUIRED, *spec.attribute_columns()], "leads")
    _require_columns(interactions_raw, list(INTERACTION_REQUIRED), "interactions")

    leads = leads_raw.copy()
    leads["lead_id"] = leads["lead_id"].astype("string").str.strip()
    if ACCOUNT_ID in leads.columns:
        # No account is missing, not an account named "": the text is stripped, an empty one is none.
        account = leads[ACCOUNT_ID].astype("string").str.strip()
        leads[ACCOUNT_ID] = account.astype(object).where(account.notna() & (account != ""), None)
    leads = quarantine.take(leads, leads["lead_id"].isna() | (leads["lead_id"] == ""), "leads", "have no lead_id")
    # Before any rule on the other columns: a copy set aside for its bad date would leave the
    # other copy looking unique, and which of the two rows is the lead would be chance.
    leads = quarantine.take(
        leads, leads["lead_id"].duplicated(keep=False), "leads", "share a lead_id with another row"
    )
    if "converted_at" not in leads.columns:
        leads["converted_at"] = pd.NaT
    created = parse_utc(leads["created_at"])
    leads = quarantine.take(leads, created.isna(), "leads", "have an unparsable, out-of-range or empty created_at")
    converted_text = leads["converted_at"].astype("string").str.strip()
    converted = parse_utc(leads["converted_at"])
    unparsable_conv = converted.isna() & converted_text.notna() & (converted_text != "")
    leads = quarantine.take(leads, unparsable_conv, "leads", "have an unparsable or out-of-range converted_at")
    leads["created_at"] = parse_utc(leads["created_at"])
    leads["converted_at"] = parse_utc(leads["converted_at"].astype("string").replace("", pd.NA))
    leads = quarantine.take(
        leads,
        leads["converted_at"] < leads["created_at"],
        "leads",
        "have converted_at before created_at",
    )
    if exported_at is not None:
        end = exported_at if isinstance(exported_at, DataEnd) else DataEnd(as_utc(exported_at), EXPORTED_AT)
        leads = quarantine.take(leads, leads["created_at"] > end.at, "leads", f"were created after the data end {_described(end)}")
    else:
        end = DataEnd(leads["created_at"].max(), LATEST_LEAD_CREATION)
    # A conversion after the export cannot have been exported: the date is wrong, and so is the
    # label it would give, so the lead goes (its interactions follow as "quarantined lead_id").
    leads = quarantine.take(leads, leads["converted_at"] > end.at, "leads", f"converted after the data end {_described(end)}")
    leads = _normalise_attributes(leads, schema, report)

    events = interactions_raw.copy()
    events["lead_id"] = events["lead_id"].astype("string").str.strip()
    events["type"] = events["type"].astype("string").str.strip()
    events = quarantine.take(events, events["type"].isna() | (events["type"] == ""), "interactions", "have no type")
    occurred = parse_utc(events["occurred_at"])
    events = quarantine.take(events, occurred.isna(), "interactions", "have an unparsable, out-of-range or empty occurred_at")
    events["occurred_at"] = parse_utc(events["occurred_at"])
    known = events["lead_id"].isin(leads["lead_id"])
    events = quarantine.take(events, ~known, "interactions", "reference an unknown or quarantined lead_id")
    # Every remaining event's lead is known and lead ids are unique: a positional look-up, ten
    # times faster than reindexing by millions of lead-id strings.
    # Compared as naive UTC datetime64: a zoned column's to_numpy() is one Timestamp object per row,
    # most of the validation time at 20 interactions a lead.
    lead_created = _utc_datetimes(leads["created_at"])[pd.Index(leads["lead_id"]).get_indexer(events["lead_id"])]
    events = quarantine.take(
        events,
        pd.Series(_utc_datetimes(events["occurred_at"]) < lead_created, index=events.index),
        "interactions",
        "occurred before their lead's created_at",
    )
    events = quarantine.take(
        events, events["occurred_at"] > end.at, "interactions", f"occurred after the data end {_described(end)}"
    )
    # The same event exported twice (a re-run sync, a union of overlapping extracts) would count
    # twice in every count feature; the first row in source order stays, the others are set aside.
    events = quarantine.take(
        events,
        events.duplicated(["lead_id", "type", "occurred_at"], keep="first"),
        "interactions",
        "repeat the lead_id, type and occurred_at of an earlier row",
        action=COLLAPSED,
    )
    if spec.learn_types is None:
        # With `learn_types` the vocabulary is not known yet: the learner reports what it folds.
        unknown = events.loc[~events["type"].isin(spec.interaction_types), "type"]
        report.unknown_types = {str(k): int(v) for k, v in unknown.value_counts().items()}
    report.data_end, report.data_end_source = _when(end.at), end.source
    events = events.sort_values(["lead_id", "occurred_at"], kind="stable").reset_index(drop=True)
    return Dataset(leads=leads, interactions=events, quarantine=quarantine.frame(), report=report, end=end, schema=schema)


def _utc_datetimes(values: pd.Series) -> np.ndarray:
    # UTC timestamps (`parse_utc`) as naive datetime64, without a Python object per row.
    return values.dt.tz_localize(None).to_numpy()


def _when(stamp: pd.Timestamp) -> str:
    return stamp.isoformat() if pd.notna(stamp) else "unknown (no valid lead)"


def _described(end: DataEnd) -> str:
    return f"{_when(end.at)} ({end.source})"


@dataclass(frozen=True)
class StaticDataset:
    """Validated leads of a static export: one row per lead, the outcome as exported, no time.

    Attributes:
        leads: `lead_id` (str), `converted` (int8, 0/1), `order` (float64, only when the export
            has an order column, e.g. a lead number growing with acquisition), `converted_at`
            (UTC, only when the export dates its outcomes) and the attribute columns, in the
            order of the source rows.
        quarantine: Rejected rows with columns `table`, `rule`, `lead_id` and the raw values.
        report: The rule breaches.
        schema: The lead schema the attributes were normalised by (the bundle stores it).
    """

    leads: pd.DataFrame
    quarantine: pd.DataFrame
    report: ValidationReport
    schema: LeadSchema | None = None

    @property
    def has_order(self) -> bool:
        return "order" in self.leads.columns


def validate_static(
    leads_raw: pd.DataFrame,
    spec: FeatureSpec,
    exported_at: datetime | pd.Timestamp | str | None = None,
    *,
    schema: LeadSchema | None = None,
) -> StaticDataset:
    """Check a static export against the contract; quarantine rows that break a rule.

    Args:
        leads_raw: `lead_id`, `converted` (1.0, 0.0, or NaN when the exported outcome was not
            recognised), optional `order` (numbers, NaN when missing or unparsable),
            optional `converted_at` (UTC) and every column of `spec.attribute_columns()`.
        spec: Declares the attribute columns.
        exported_at: When the export was taken; leads converted after it are quarantined.
        schema: How raw attribute values are read (by feature name); None takes the
            contract's defaults for `spec`.

    Returns:
        The validated `StaticDataset`, with the lead schema applied (restricted to `spec`).

    Raises:
        ContractError: A required or declared column is missing, or `schema` does not declare
            an attribute of `spec`.
    """
    schema = _schema_for(spec, schema)
    report = ValidationReport()
    quarantine = Quarantine(report)
    _require_columns(leads_raw, ["lead_id", "converted", *spec.attribute_columns()], "leads")
    leads = leads_raw.copy()
    leads["lead_id"] = leads["lead_id"].astype("string").str.strip()
    leads = quarantine.take(leads, leads["lead_id"].isna() | (leads["lead_id"] == ""), "leads", "have no lead_id")
    # Before any rule on the other columns: a copy set aside for its bad date would leave the
    # other copy looking unique, and which of the two rows is the lead would be chance.
    leads = quarantine.take(
        leads, leads["lead_id"].duplicated(keep=False), "leads", "share a lead_id with another row"
    )
    converted = pd.to_numeric(leads["converted"], errors="coerce")
    leads = quarantine.take(
        leads, ~converted.isin([0, 1]), "leads", "have an outcome that is neither a conversion nor a non-conversion"
    )
    leads["converted"] = pd.to_numeric(leads["converted"]).astype("int8")
    if "order" in leads.columns:
        order = pd.to_numeric(leads["order"], errors="coerce")
        leads = quarantine.take(leads, order.isna(), "leads", "have no usable order value")
        leads["order"] = pd.to_numeric(leads["order"]).astype("float64")
    if exported_at is not None and "converted_at" in leads.columns:
        end = DataEnd(as_utc(exported_at), EXPORTED_AT)
        leads = quarantine.take(leads, leads["converted_at"] > end.at, "leads", f"converted after the data end {_described(end)}")
    leads = _normalise_attributes(leads, schema, report)
    return StaticDataset(leads=leads, quarantine=quarantine.frame(), report=report, schema=schema)
