"""The leakage guard: before any training, look for columns and rows that reveal the outcome.

A CRM export is full of fields the sales team filled in after they knew how a lead ended
("Tags: Closed by Horizzon", "Lead Quality: Worst"). A model trained on them looks brilliant
and is useless on a new lead, which has no such values yet. The guard runs before every
training and reports, as a table, in MLflow (a dict artifact and tags) and in the run record:

* **single-column AUC** — each attribute column alone, as a score, on the training rows.
  Categories, and numbers cut into 20 quantile bins, are scored by their conversion rate
  learned on the other folds (5-fold cross-fitted target-rate encoding, smoothed towards the
  overall rate); a missing value is a level of its own. Flagged at AUC >= 0.85 on all rows
  (`AUC_ALL_ROWS`), or >= 0.80 on the rows where the column has a value when it is missing for
  at least 10 % of rows (`AUC_FILLED_ROWS`): a field filled in for some leads that nearly
  decides the ones it is filled for is a verdict, typed in while working the lead. Pre-outcome
  signals stay well below: on X Education the strongest is time on the website (0.76 on all
  rows), the strongest partly-filled one the occupation (0.59 where filled), while Tags reaches
  0.92 and Lead Quality 0.85 where filled; on the simulated funnel no attribute passes 0.68.
* **post-outcome by config** — columns `data.columns.post_outcome` lists.
* **recorded after the snapshot** — a column whose recorded-at time (`data.columns.recorded_at`
  or an attribute table's `recorded_at`) is after the snapshot for >= 25 % of training
  snapshots, or on/after the conversion for >= 5 % of converted leads: its exported value was
  probably not known when the score would have been given.
* **ids and row order** — the AUC of the lead id (its digits, as a number) and of the row
  position. Conversion rates drift over time, so 0.5-0.6 is normal for an export in
  acquisition order; >= 0.70 (`AUC_ID_ORDER`) means the export was numbered or sorted by
  outcome, or that the rate drifted strongly over time. The two are told apart: sorted, nearly
  every twentieth of the order holds one outcome only (an ordered split on it is meaningless);
  drifting, every stretch mixes both (the ordered split is then what tests on the newest
  leads). Nothing is excluded (neither is a feature).
* **clock columns** — in an export with time, each attribute column's cross-fitted AUC at
  telling the newer half of the training rows from the older half (the same target-rate
  encoding as the single-column AUC). A column that does so by itself at >= 0.90
  (`AUC_CLOCK`) says when a lead came, not who it is: a campaign month without its year, a
  batch number. A model learns each period's conversion rate from it, which says nothing about
  the next period, whose values it has not seen or saw in another year. On Bank Marketing the
  month of the last contact reaches 0.95 (the next, the contact channel, 0.85); on the
  simulated funnel no attribute passes 0.6.
* **near-duplicate rows** — two leads with the same values in every feature, one of them a
  rare value of a many-valued column (a value at most 0.5 % of rows share, in a column with at
  least 50 distinct values), are the same lead entered twice; flagged when >= 1 % of the
  evaluation rows have such a twin on the training side. Cross-validation then keeps twins in
  the same fold.

Flagged columns are excluded from training unless the user keeps them on purpose (the CLI's
`--allow-column NAME`); the report records both lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from features.contract import Dataset, StaticDataset
from features.engine import lead_attribute_rows
from features.snapshots import matured_label_cutoff, snapshot_times
from features.spec import FeatureSpec
from features.vocabulary import EMAIL_DOMAIN_KIND

AUC_ALL_ROWS = 0.85
AUC_FILLED_ROWS = 0.80
FILLED_CHECK_MIN_MISSING = 0.10
AUC_ID_ORDER = 0.70
AUC_CLOCK = 0.90
RECORDED_AFTER_SNAPSHOT_SHARE = 0.25
RECORDED_AFTER_OUTCOME_SHARE = 0.05
NEAR_DUPLICATE_SHARE = 0.01
RARE_VALUE_SHARE = 0.005
MANY_VALUES = 50
N_BINS = 20
N_FOLDS = 5
SMOOTHING = 10.0
MIN_CLASS_ROWS = 10

# An order that ranks the outcome is told apart as a sort (stretches of one outcome) or drift.
ORDER_PARTS = 20
PURE_RATE = 0.01
SORTED_PURE_SHARE = 0.9

CHECKS = ("single_column_auc", "post_outcome", "recorded_after", "clock_column", "id_or_order", "near_duplicates")


@dataclass(frozen=True)
class Finding:
    """One thing the guard flagged.

    Attributes:
        check: One of `CHECKS`.
        column: The feature, "lead_id", "(row order)" or "(rows)".
        value: The measure (an AUC, a share).
        threshold: The threshold it reached.
        detail: In words.
    """

    check: str
    column: str
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class ColumnScore:
    """Single-column AUC of one attribute column."""

    column: str
    auc_all: float
    auc_filled: float | None
    filled_share: float


@dataclass
class LeakageReport:
    """What the guard measured and flagged, and what training does about it.

    Attributes:
        findings: Everything flagged.
        scores: Single-column AUC of every attribute column, highest first.
        notes: Checks that could not run and why.
        allowed: Flagged columns the user kept on purpose.
        twin_groups: Group id per evaluation row (-1 for rows without a twin), for
            cross-validation folds that keep twins together; None when not computed.
    """

    findings: list[Finding] = field(default_factory=list)
    scores: list[ColumnScore] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    twin_groups: np.ndarray | None = None

    def flagged_columns(self) -> list[str]:
        """Features flagged by any check, in first-flagged order."""
        excludable = {"single_column_auc", "post_outcome", "recorded_after", "clock_column"}
        return list(dict.fromkeys(f.column for f in self.findings if f.check in excludable))

    def excluded(self) -> list[str]:
        return [c for c in self.flagged_columns() if c not in self.allowed]

    def table(self) -> str:
        """The findings as a markdown table (or a line saying nothing was flagged)."""
        if not self.findings:
            return "leakage guard: nothing flagged"
        lines = ["| column | check | value | threshold | action | why |", "|---|---|---|---|---|---|"]
        flagged = set(self.flagged_columns())
        for f in self.findings:
            if f.column in flagged:
                action = "kept (--allow-column)" if f.column in self.allowed else "excluded"
            else:
                action = "warning"
            lines.append(f"| {f.column} | {f.check} | {f.value:.3f} | {f.threshold:g} | {action} | {f.detail} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "thresholds": {
                "auc_all_rows": AUC_ALL_ROWS,
                "auc_filled_rows": AUC_FILLED_ROWS,
                "auc_id_or_order": AUC_ID_ORDER,
                "auc_clock": AUC_CLOCK,
                "recorded_after_snapshot_share": RECORDED_AFTER_SNAPSHOT_SHARE,
                "recorded_after_outcome_share": RECORDED_AFTER_OUTCOME_SHARE,
                "near_duplicate_share": NEAR_DUPLICATE_SHARE,
            },
            "findings": [f.__dict__ for f in self.findings],
            "single_column_auc": [s.__dict__ for s in self.scores],
            "notes": list(self.notes),
            "flagged": self.flagged_columns(),
            "allowed": list(self.allowed),
            "excluded": self.excluded(),
        }

    def tags(self) -> dict[str, str]:
        """Short MLflow tags: what was flagged, kept on purpose and excluded."""
        return {
            "leakage.flagged": ",".join(self.flagged_columns()) or "-",
            "leakage.allowed": ",".join(c for c in self.allowed if c in self.flagged_columns()) or "-",
            "leakage.excluded": ",".join(self.excluded()) or "-",
            "leakage.warnings": ",".join(sorted({f.check for f in self.findings if f.column not in self.flagged_columns()})) or "-",
        }


def _levels(values: pd.Series, categorical: bool) -> np.ndarray:
    """Integer level per row: a category, or one of N_BINS quantile bins; missing is level -1."""
    if categorical:
        codes, _ = pd.factorize(values.astype(object).where(values.notna(), None), use_na_sentinel=True)
        return codes
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    codes = np.full(len(numbers), -1, dtype=np.int64)
    present = numbers.notna().to_numpy()
    if present.any():
        # Equal values share a bin: cut at the quantile edges of the values.
        edges = np.unique(np.quantile(numbers[present], np.linspace(0, 1, N_BINS + 1)))
        codes[present] = np.searchsorted(edges[1:-1], numbers[present].to_numpy(), side="right")
    return codes


def cross_fitted_rate_auc(levels: np.ndarray, y: np.ndarray, seed: int) -> float:
    """AUC of each row's level scored by its conversion rate learned on the other folds.

    Args:
        levels: Integer level per row (missing included as a level of its own).
        y: 0/1 outcome per row.
        seed: Fold assignment seed.

    Returns:
        ROC AUC of the cross-fitted encoding (0.5 means no signal).
    """
    score = np.empty(len(y), dtype=np.float64)
    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    offset = levels.min(initial=0)
    shifted = levels - offset
    size = int(shifted.max(initial=0)) + 1
    for train, held in folds.split(np.zeros(len(y)), y):
        prior = y[train].mean()
        positives = np.bincount(shifted[train], weights=y[train], minlength=size)
        counts = np.bincount(shifted[train], minlength=size)
        rate = (positives + SMOOTHING * prior) / (counts + SMOOTHING)
        score[held] = rate[shifted[held]]
    return float(roc_auc_score(y, score))


def single_column_scores(
    frame: pd.DataFrame, y: np.ndarray, categorical: Sequence[str], numeric: Sequence[str], seed: int = 0
) -> list[ColumnScore]:
    """Single-column AUC of every attribute column, on all rows and on the rows it is filled.

    Args:
        frame: One row per training lead with the columns `categorical` and `numeric`.
        y: 0/1 outcome per row.
        categorical: Category columns.
        numeric: Number columns.
        seed: Fold seed of the cross-fitting.

    Returns:
        Scores sorted by the larger of the two AUCs, highest first.
    """
    scores = []
    for column in [*categorical, *numeric]:
        levels = _levels(frame[column], column in categorical)
        filled = levels >= 0
        auc_all = cross_fitted_rate_auc(levels, y, seed)
        auc_filled = None
        if 1 - filled.mean() >= FILLED_CHECK_MIN_MISSING and _enough_of_each(y[filled]):
            auc_filled = cross_fitted_rate_auc(levels[filled], y[filled], seed)
        scores.append(ColumnScore(column, round(auc_all, 4), None if auc_filled is None else round(auc_filled, 4), round(float(filled.mean()), 4)))
    return sorted(scores, key=lambda s: -max(s.auc_all, s.auc_filled or 0.0))


def _enough_of_each(y: np.ndarray) -> bool:
    positives = int(y.sum())
    return positives >= MIN_CLASS_ROWS and len(y) - positives >= MIN_CLASS_ROWS


def order_auc(values: np.ndarray, y: np.ndarray) -> float:
    """How well a position or id number ranks the outcome, either way (0.5 = not at all)."""
    auc = roc_auc_score(y, values)
    return float(max(auc, 1 - auc))


def order_detail(values: np.ndarray, y: np.ndarray, what: str) -> str:
    """Why an order ranks the outcome: a sort by outcome, or the conversion rate drifting over time.

    Sorted by outcome, nearly every stretch of the order holds one outcome only; drift changes
    the rate from one stretch to the next while every stretch still mixes both.
    """
    ranked = y[np.argsort(values, kind="stable")]
    parts = np.array_split(ranked, ORDER_PARTS)
    rates = np.array([part.mean() for part in parts if len(part)])
    pure = float(np.mean((rates <= PURE_RATE) | (rates >= 1 - PURE_RATE)))
    if pure >= SORTED_PURE_SHARE:
        return f"the {what} ranks the outcome and {pure:.0%} of its stretches hold one outcome only: sorted or numbered by outcome"
    fifths = [part.mean() for part in np.array_split(ranked, 5)]
    return (
        f"the {what} ranks the outcome, but every stretch mixes both: the conversion rate drifts with it "
        f"({fifths[0]:.0%} in the first fifth, {fifths[-1]:.0%} in the last), time drift rather than a sort by outcome; "
        "an ordered split tests on the newest leads"
    )


def id_numbers(ids: pd.Series) -> np.ndarray | None:
    """The digits of each id as a number ("L-0042" -> 42), or None when ids have no digits."""
    digits = ids.astype("string").str.replace(r"\D", "", regex=True).str[-15:]
    numbers = pd.to_numeric(digits.replace("", pd.NA), errors="coerce")
    if numbers.notna().mean() < 0.9 or numbers.nunique() < 0.9 * len(numbers):
        return None
    return numbers.fillna(numbers.median()).to_numpy(dtype=np.float64)


def _signature_frame(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = {}
    for column in columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values.dtype):
            out[column] = values.astype("float64").round(6)
        else:
            out[column] = values.astype("string").str.strip().str.lower()
    return pd.DataFrame(out)


def near_duplicate_groups(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, bool]:
    """Rows that are the same lead twice: equal in every column, with a rare many-valued value.

    Args:
        frame: One row per lead.
        columns: The feature columns compared.

    Returns:
        Group id per row (-1 when the row has no twin) and whether the check could run (it
        needs a column with at least `MANY_VALUES` distinct values).
    """
    signature = _signature_frame(frame, columns)
    many = [c for c in columns if signature[c].nunique() >= MANY_VALUES]
    groups = np.full(len(frame), -1, dtype=np.int64)
    if not many or not len(frame):
        return groups, False
    rare = np.zeros(len(frame), dtype=bool)
    for column in many:
        share = signature[column].map(signature[column].value_counts(normalize=True))
        rare |= (share <= RARE_VALUE_SHARE).fillna(False).to_numpy(dtype=bool)
    hashes = pd.util.hash_pandas_object(signature, index=False).to_numpy()
    candidates = pd.Series(hashes[rare])
    repeated = candidates.duplicated(keep=False).to_numpy()
    rows = np.flatnonzero(rare)[repeated]
    groups[rows] = pd.factorize(hashes[rows])[0]
    return groups, True


@dataclass(frozen=True)
class GuardInput:
    """What the guard looks at; built by the caller from the data and the evaluation plan.

    Attributes:
        frame: One row per training lead, with every attribute feature column.
        y: 0/1 outcome of those rows.
        categorical: Category feature columns.
        numeric: Number feature columns.
        ids: Lead ids of all rows in source order (for the id and row-order checks).
        y_all: Outcome of all rows, aligned with `ids`.
        twins_frame: Rows compared for near-duplicates (all evaluation rows).
        twins_test: Boolean per `twins_frame` row: on the test side (None for
            cross-validation, where any two rows may fall in different folds).
        post_outcome: Columns the config marks as post-outcome.
        recorded_after: Feature -> (share of snapshots recorded after, share of converted leads
            recorded on/after the conversion), either None when not measurable.
        order: When each `frame` row came (creation time or the export's order); None: no time.
    """

    frame: pd.DataFrame
    y: np.ndarray
    categorical: list[str]
    numeric: list[str]
    ids: pd.Series
    y_all: np.ndarray
    twins_frame: pd.DataFrame
    twins_test: np.ndarray | None
    post_outcome: list[str] = field(default_factory=list)
    recorded_after: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    order: np.ndarray | None = None


def clock_column_aucs(frame: pd.DataFrame, order: np.ndarray, categorical: Sequence[str], numeric: Sequence[str], seed: int) -> dict[str, float]:
    """Per attribute column, the cross-fitted AUC of telling the newer half of the rows (by `order`) from the older."""
    newer = (pd.Series(order).rank(method="first").to_numpy() > len(order) / 2).astype(np.int8)
    return {
        column: cross_fitted_rate_auc(_levels(frame[column], column in categorical), newer, seed)
        for column in [*categorical, *numeric]
    }


def run_guard(data: GuardInput, allowed: Sequence[str] = (), seed: int = 0) -> LeakageReport:
    """Run every check and decide what training excludes.

    Args:
        data: See `GuardInput`.
        allowed: Flagged columns to keep anyway (recorded in the report).
        seed: Fold seed of the cross-fitted AUC.

    Returns:
        The report; `report.excluded()` are the columns training must leave out.
    """
    report = LeakageReport(allowed=list(allowed))
    features = [*data.categorical, *data.numeric]
    if _enough_of_each(data.y):
        report.scores = single_column_scores(data.frame, data.y, data.categorical, data.numeric, seed)
        for s in report.scores:
            if s.auc_all >= AUC_ALL_ROWS:
                report.findings.append(Finding(
                    "single_column_auc", s.column, s.auc_all, AUC_ALL_ROWS,
                    "alone ranks leads too well for a signal known before the outcome",
                ))
            elif s.auc_filled is not None and s.auc_filled >= AUC_FILLED_ROWS:
                report.findings.append(Finding(
                    "single_column_auc", s.column, s.auc_filled, AUC_FILLED_ROWS,
                    f"filled for {s.filled_share:.0%} of leads and nearly decides those: looks like a field filled in after contact",
                ))
    else:
        report.notes.append(f"single-column AUC not measured: fewer than {MIN_CLASS_ROWS} conversions or non-conversions")

    for column in data.post_outcome:
        if column in features:
            report.findings.append(Finding("post_outcome", column, 1.0, 1.0, "marked post-outcome in data.columns.post_outcome"))

    for column, (after_snapshot, after_outcome) in data.recorded_after.items():
        if after_outcome is not None and after_outcome >= RECORDED_AFTER_OUTCOME_SHARE:
            report.findings.append(Finding(
                "recorded_after", column, after_outcome, RECORDED_AFTER_OUTCOME_SHARE,
                f"set on or after the conversion for {after_outcome:.0%} of converted leads",
            ))
        elif after_snapshot is not None and after_snapshot >= RECORDED_AFTER_SNAPSHOT_SHARE:
            report.findings.append(Finding(
                "recorded_after", column, after_snapshot, RECORDED_AFTER_SNAPSHOT_SHARE,
                f"set after the snapshot time for {after_snapshot:.0%} of training snapshots",
            ))
        elif after_snapshot is None and after_outcome is None:
            report.notes.append(f"{column}: recorded-at time not checked (no conversion dates to compare with)")

    if _enough_of_each(data.y_all):
        numbers = id_numbers(data.ids)
        if numbers is not None:
            auc = order_auc(numbers, data.y_all)
            if auc >= AUC_ID_ORDER:
                report.findings.append(Finding("id_or_order", "lead_id", auc, AUC_ID_ORDER, order_detail(numbers, data.y_all, "id number")))
        auc = order_auc(np.arange(len(data.y_all), dtype=np.float64), data.y_all)
        if auc >= AUC_ID_ORDER:
            position = np.arange(len(data.y_all), dtype=np.float64)
            report.findings.append(Finding("id_or_order", "(row order)", auc, AUC_ID_ORDER, order_detail(position, data.y_all, "row position")))

    if data.order is not None and len(data.order) >= 2 * MIN_CLASS_ROWS:
        for column, auc in clock_column_aucs(data.frame, data.order, data.categorical, data.numeric, seed).items():
            if auc >= AUC_CLOCK:
                report.findings.append(Finding(
                    "clock_column", column, auc, AUC_CLOCK,
                    "tells the newer half of the training rows from the older by itself: it says when a lead came, "
                    "not who it is, and a period's rate does not carry to the next",
                ))

    groups, checked = near_duplicate_groups(data.twins_frame, features)
    if not checked:
        report.notes.append(f"near-duplicates not checked: no feature has {MANY_VALUES} or more distinct values")
    else:
        report.twin_groups = groups
        if data.twins_test is None:
            with_twin = groups >= 0
            n_rows = len(groups)
        else:
            train_groups = set(groups[(~data.twins_test) & (groups >= 0)].tolist())
            with_twin = data.twins_test & np.isin(groups, list(train_groups)) & (groups >= 0)
            n_rows = int(data.twins_test.sum())
        share = float(with_twin.sum()) / max(n_rows, 1)
        if share >= NEAR_DUPLICATE_SHARE:
            where = "across folds (kept in one fold)" if data.twins_test is None else "in test with a twin in train"
            report.findings.append(Finding("near_duplicates", "(rows)", share, NEAR_DUPLICATE_SHARE, f"{int(with_twin.sum())} rows {where}: the same lead entered twice"))
    return report



def spec_without(spec: FeatureSpec, columns: Sequence[str]) -> FeatureSpec:
    """The spec without some attribute features (those the guard excluded)."""
    drop = set(columns)
    return spec.model_copy(
        update={
            "categorical": [c for c in spec.categorical if c not in drop],
            "numeric": [c for c in spec.numeric if c not in drop],
            "email_column": None if EMAIL_DOMAIN_KIND in drop else spec.email_column,
        }
    )


def attribute_frame(leads: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The attribute features of each lead (categories as object, numbers as float)."""
    rows = lead_attribute_rows(leads, spec)
    return pd.DataFrame({**rows.categorical, **rows.numeric})


def _attribute_names(spec: FeatureSpec) -> tuple[list[str], list[str]]:
    return spec.categorical_features(), list(spec.numeric)


def recorded_after_shares(
    recorded: pd.DataFrame,
    leads: pd.DataFrame,
    offsets_days: Sequence[float] | None,
    data_end: pd.Timestamp | None,
) -> dict[str, tuple[float | None, float | None]]:
    """For each feature with a recorded-at time: how often it was set after the snapshot or outcome.

    Args:
        recorded: `lead_id` and one UTC timestamp column per feature.
        leads: `lead_id`, optional `created_at` and `converted_at` (UTC).
        offsets_days: Snapshot offsets (None for a static export: no snapshots).
        data_end: Latest timestamp of the data (with offsets).

    Returns:
        Feature -> (share of snapshots whose value was set after as_of, share of converted
        leads whose value was set on or after the conversion); None where not measurable.
    """
    out: dict[str, tuple[float | None, float | None]] = {}
    if recorded.shape[1] <= 1:
        return out
    merged = leads.merge(recorded, on="lead_id", how="inner", suffixes=("", "__recorded"))
    snapshots = None
    if offsets_days is not None and data_end is not None and "created_at" in leads:
        snapshots = snapshot_times(leads, offsets_days, data_end).merge(recorded, on="lead_id", how="inner")
    for column in recorded.columns.drop("lead_id"):
        stamp = merged[column + "__recorded"] if column + "__recorded" in merged else merged[column]
        after_outcome = None
        if "converted_at" in merged:
            converted = merged["converted_at"].notna() & stamp.notna()
            if converted.any():
                after_outcome = float((stamp[converted] >= merged.loc[converted, "converted_at"]).mean())
        after_snapshot = None
        if snapshots is not None:
            known = snapshots[column].notna()
            if known.any():
                after_snapshot = float((snapshots.loc[known, column] > snapshots.loc[known, "as_of"]).mean())
        out[column] = (after_snapshot, after_outcome)
    return out


def guard_input_for_dataset(
    data: Dataset,
    spec: FeatureSpec,
    horizon_days: float,
    test_fraction: float,
    offsets_days: Sequence[float],
    recorded: pd.DataFrame | None = None,
    post_outcome: Sequence[str] = (),
) -> GuardInput:
    """The guard's view of data with time: leads whose label has matured, split by creation time.

    A lead's outcome here is "converted within horizon_days of creation"; training rows are
    the matured leads before the test period (the last `test_fraction` by creation time).
    """
    leads = data.leads
    cutoff = matured_label_cutoff(data.data_end, horizon_days)
    matured = leads[leads["created_at"] <= cutoff].reset_index(drop=True)
    horizon = pd.Timedelta(days=horizon_days)
    y_all = (matured["converted_at"].notna() & (matured["converted_at"] <= matured["created_at"] + horizon)).to_numpy(np.int8)
    rank = matured["created_at"].rank(method="first").to_numpy()
    test = rank > len(matured) * (1 - test_fraction)
    frame = attribute_frame(matured, spec)
    categorical, numeric = _attribute_names(spec)
    return GuardInput(
        frame=frame[~test].reset_index(drop=True),
        y=y_all[~test],
        categorical=categorical,
        numeric=numeric,
        ids=matured["lead_id"],
        y_all=y_all,
        twins_frame=frame,
        twins_test=test,
        post_outcome=list(post_outcome),
        recorded_after=recorded_after_shares(recorded, leads, offsets_days, data.data_end) if recorded is not None else {},
        order=matured["created_at"].dt.as_unit("ns").array.asi8[~test].astype(np.float64),
    )


def guard_input_for_static(
    data: StaticDataset,
    spec: FeatureSpec,
    test_fraction: float,
    recorded: pd.DataFrame | None = None,
    post_outcome: Sequence[str] = (),
) -> GuardInput:
    """The guard's view of a static export: all leads, or those before the ordered test part."""
    leads = data.leads
    y_all = leads["converted"].to_numpy(np.int8)
    frame = attribute_frame(leads, spec)
    categorical, numeric = _attribute_names(spec)
    if data.has_order:
        rank = leads["order"].rank(method="first").to_numpy()
        in_test = rank > len(leads) * (1 - test_fraction)
        test: np.ndarray | None = in_test
        train = ~in_test
    else:
        test, train = None, np.ones(len(leads), dtype=bool)
    return GuardInput(
        frame=frame[train].reset_index(drop=True),
        y=y_all[train],
        categorical=categorical,
        numeric=numeric,
        ids=leads["lead_id"],
        y_all=y_all,
        twins_frame=frame,
        twins_test=test,
        post_outcome=list(post_outcome),
        recorded_after=recorded_after_shares(recorded, leads, None, None) if recorded is not None else {},
        order=leads["order"].to_numpy(dtype=np.float64)[train] if data.has_order else None,
    )
