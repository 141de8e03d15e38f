"""The model bundle: everything a trained model needs to score, with no pickle.

A bundle is a folder:
- `model.txt`: LightGBM's text model, or `linear.json` for an additive logistic model
  (`model.linear`; `model_family` in bundle.json says which);
- `bundle.json`: feature spec and order, the lead schema (how raw CRM values are read), category levels, calibration map, score scale, tier
  thresholds, MQL threshold, horizon, the point grid scored beside the model, test metrics,
  training metadata, and a smoke lead with the probability the model gave it when saved
  (`model.check` compares it before a bundle serves);
- optionally, files for people that serving hands out as they are and `ScoringModel.load`
  never needs: `report.html` (the leadership report) and `importance.json` (global drivers).

Training writes it; serving, batch scoring and reports read it through `ScoringModel`. This
module depends on `features` only, so serving never imports training.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from features.engine import FEW_ROWS, BehaviourPlan, FeatureRows
from features.grid import PointGrid
from features.labels import DriverPhrasing, driver_of, driver_phrasing, is_attribute_driver
from features.schema import LeadSchema
from features.spec import FeatureSpec
from model.compiled import COMPILE_MIN_ROWS, CompiledForest, CompileMode
from model.hazard import HazardModel, HazardSettings
from model.linear import LINEAR_FAMILY, LinearModel
from model.treeshap import ExactContributions
from model.trend import TrendThresholds

BUNDLE_FORMAT = 1
# A category level standing for "missing" when training kept missing as a level (static exports).
MISSING_LEVEL = "(missing)"
MODEL_FILE = "model.txt"
LINEAR_FILE = "linear.json"
ModelFamily = Literal["lightgbm", "linear"]
TierName = Literal["hot", "warm", "cold"]
META_FILE = "bundle.json"
REPORT_FILE = "report.html"
IMPORTANCE_FILE = "importance.json"


class Calibration(BaseModel):
    """Map from the booster's raw log-odds to a calibrated probability.

    `isotonic`: piecewise-linear through (x, y) knots (np.interp, flat outside), blended with
    `blend` of sigmoid(a * raw + b). Isotonic steps are flat, and so is the map past its last
    knot: alone, it ties leads the model tells apart, and under drift most new leads can score
    past the knots and tie at the top (on Bank Marketing it took a period's ROC AUC from 0.70
    to 0.58). A small share of a Platt map keeps the order strictly the model's.
    `platt`: sigmoid(a * raw + b).
    """

    model_config = ConfigDict(extra="forbid")

    method: str = Field(pattern="^(isotonic|platt)$")
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)
    a: float = 1.0
    b: float = 0.0
    blend: float = Field(default=0.0, ge=0.0, lt=1.0)

    def apply(self, raw: NDArray[Any]) -> NDArray[Any]:
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "isotonic":
            calibrated: NDArray[Any] = np.interp(raw, self.x, self.y)
            if self.blend:
                calibrated = (1.0 - self.blend) * calibrated + self.blend / (1.0 + np.exp(-(self.a * raw + self.b)))
            return calibrated
        return 1.0 / (1.0 + np.exp(-(self.a * raw + self.b)))

    def apply_each(self, raw: list[float]) -> list[float]:
        """`apply` of a few raw scores, without the cost of numpy's small arrays: the same values to the bit.

        numpy's exp and interp, the rest in Python's float arithmetic, which rounds every
        operation as numpy's does (IEEE 754; `tests/test_scoring_fast_paths.py`).
        """
        logistic = self.method == "platt" or self.blend
        exps: list[float] = np.exp([-(self.a * r + self.b) for r in raw]).tolist() if logistic else []
        if self.method == "platt":
            return [1.0 / (1.0 + e) for e in exps]
        calibrated: list[float] = np.interp(raw, self.x, self.y).tolist()
        if not self.blend:
            return calibrated
        keep = 1.0 - self.blend
        return [keep * c + self.blend / (1.0 + e) for c, e in zip(calibrated, exps, strict=True)]


class Tiers(BaseModel):
    """Probability thresholds: hot at or above `hot`, warm at or above `warm`, else cold."""

    model_config = ConfigDict(extra="forbid")

    hot: float
    warm: float

    def of(self, probability: float) -> TierName:
        return "hot" if probability >= self.hot else ("warm" if probability >= self.warm else "cold")


class Bins(BaseModel):
    """One variable's reference distribution: the share of reference rows in each bin.

    `numeric`: bins (-inf, edges[0]], (edges[0], edges[1]], ..., (edges[-1], inf), then missing.
    `categorical`: one bin per level, then "other" (any value not listed), then missing.
    `model.monitoring` makes them and compares recent scores with them (PSI).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["numeric", "categorical"]
    edges: list[float] = Field(default_factory=list)
    levels: list[str] = Field(default_factory=list)
    proportions: list[float]


class DriftReference(BaseModel):
    """What drift monitoring compares the served leads with, saved at training time.

    Attributes:
        features: Feature name -> its distribution over the training snapshots.
        probability: The model's calibrated probability over the validation snapshots (the
            rows it did not learn from, which also set the 0-100 score scale).
        n_features_rows: Number of training snapshots.
        n_probability_rows: Number of validation snapshots.
    """

    model_config = ConfigDict(extra="forbid")

    features: dict[str, Bins]
    probability: Bins
    n_features_rows: int
    n_probability_rows: int


class SmokeCheck(BaseModel):
    """A lead and the probability the model gave it when the bundle was saved (`model.check`).

    Serving scores the lead again before the bundle may serve: another probability means
    bundle.json and the model file do not belong together, or the features changed.
    """

    model_config = ConfigDict(extra="forbid")

    lead: dict[str, Any] = Field(description="The lead as POST /score's `lead` (JSON).")
    as_of: str = Field(description="ISO 8601 time it was scored at.")
    probability: float


SUBSCORE_QUANTILES = 101  # as score_quantiles: the 0-100 percentile scale
SubScoreCell = Literal["A1", "A2", "A3", "B1", "B2", "B3", "C1", "C2", "C3"]


class SubScoreScale(BaseModel):
    """Where a lead's fit and engagement stand among the reference leads, saved at training time.

    A lead's fit is the sum of its attribute features' exact log-odds contributions (declared
    categorical and numeric attributes, the email domain kind), its engagement that of its
    behaviour features (interaction counts, recencies, engagement, activity, lead age): with the
    expected value, the two add up to the raw score. The reference leads are those the 0-100
    score scale (`BundleMeta.score_quantiles`) comes from.

    Attributes:
        fit_quantiles: 101 quantiles (0 %, 1 %, ..., 100 %) of the reference leads' fit sums.
        engagement_quantiles: The same for their engagement sums.
        fit_cuts: The 1/3 and 2/3 quantiles of the fit sums: the C | B | A thirds of the cell.
        engagement_cuts: The same for engagement: the 3 | 2 | 1 thirds of the cell.
    """

    model_config = ConfigDict(extra="forbid")

    fit_quantiles: list[float] = Field(min_length=SUBSCORE_QUANTILES, max_length=SUBSCORE_QUANTILES)
    engagement_quantiles: list[float] = Field(min_length=SUBSCORE_QUANTILES, max_length=SUBSCORE_QUANTILES)
    fit_cuts: list[float] = Field(min_length=2, max_length=2)
    engagement_cuts: list[float] = Field(min_length=2, max_length=2)


class BundleMeta(BaseModel):
    """The JSON half of a bundle."""

    model_config = ConfigDict(extra="forbid")

    format: int = BUNDLE_FORMAT
    model_family: ModelFamily = Field(default="lightgbm", description="lightgbm (model.txt) or linear (linear.json)")
    model_version: str
    trained_at: str
    horizon_days: float
    feature_spec: FeatureSpec
    feature_names: list[str]
    categorical_levels: dict[str, list[str]]
    calibration: Calibration
    score_quantiles: list[float]
    tiers: Tiers
    mql_probability: float
    grid: PointGrid
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    reference: DriftReference | None = Field(
        default=None, description="Distributions for drift monitoring; None in bundles trained before it existed."
    )
    lead_schema: LeadSchema | None = Field(
        default=None,
        description="How raw lead values are read (names as exported, missing tokens, number marks, zones, type map); "
        "None in bundles trained before it existed, which read leads by the contract's defaults for their feature spec.",
    )
    smoke: SmokeCheck | None = Field(
        default=None,
        description="The smoke lead and its probability, written by `ScoringModel.save`; None in bundles saved before it existed.",
    )
    subscores: SubScoreScale | None = Field(
        default=None,
        description="The fit and engagement scales; None in bundles trained before they existed (their scores have no "
        "sub-scores), and for models without both attribute and behaviour features.",
    )
    hazard: HazardSettings | None = Field(
        default=None,
        description="The discrete-time hazard (hazard.txt, `model.hazard`): probabilities by horizon and expected days "
        "to convert; None in bundles trained without it.",
    )
    trend: TrendThresholds | None = Field(
        default=None,
        description="Where a lead's 7-day score change makes it improving or declining, set on validation "
        "(`model.trend`); None in bundles trained before it existed and for static exports (their scores have no trend).",
    )

    def resolved_schema(self) -> LeadSchema:
        """The lead schema every scoring path applies: the stored one, or the feature spec's defaults."""
        return self.lead_schema if self.lead_schema is not None else LeadSchema.from_spec(self.feature_spec)


def level_codes(levels: Mapping[str, Sequence[str]]) -> dict[str, dict[str | None, float]]:
    """Each category column's level -> its code in the model matrix: its position among the training levels.

    A missing value (None) takes the code of `MISSING_LEVEL` when training kept missing as a
    level of its own; otherwise it has no code (NaN).
    """
    codes: dict[str, dict[str | None, float]] = {}
    for name, names in levels.items():
        code: dict[str | None, float] = {level: float(i) for i, level in enumerate(names)}
        if MISSING_LEVEL in code:
            code[None] = code[MISSING_LEVEL]
        codes[name] = code
    return codes


def encode_matrix(
    rows: FeatureRows,
    feature_names: Sequence[str],
    levels: Mapping[str, Sequence[str]],
    codes: Mapping[str, Mapping[str | None, float]] | None = None,
) -> NDArray[Any]:
    """The model matrix: float64, categories as the code of their training level.

    A category value not seen at training time (or missing) becomes NaN, which LightGBM
    routes like a missing value; except that a missing value takes the code of the level
    `MISSING_LEVEL` when training kept missing as a level of its own (static exports: an
    unanswered form field is information).

    Args:
        rows: Features of the snapshots.
        feature_names: Column order of the model.
        levels: Category column -> levels seen at training time.
        codes: `level_codes(levels)`, when the caller keeps them (a loaded model encodes every
            request with the same codes); computed here when None.
    """
    if codes is None:
        codes = level_codes(levels)
    first = next(iter(rows.categorical.values()), None)
    n = len(first if first is not None else next(iter(rows.numeric.values())))
    # The behaviour block, when the model's columns end with it, is copied at once.
    k = len(rows.behaviour_names)
    tail = rows.behaviour is not None and 0 < k <= len(feature_names) and tuple(feature_names[len(feature_names) - k :]) == rows.behaviour_names
    head = feature_names[: len(feature_names) - k] if tail else feature_names
    matrix = np.empty((n, len(feature_names)), dtype=np.float64)
    if tail:
        matrix[:, len(head) :] = rows.behaviour
    if n <= FEW_ROWS:
        # A lead or a few: every value of the head in Python, then one array (numpy's calls per
        # column cost more than the values). The same codes and floats as the columns below.
        head_values = [
            [code.get(v, math.nan) for v in rows.categorical[name]] if (code := codes.get(name)) is not None
            else rows.numeric[name].tolist()
            for name in head
        ]  # fmt: skip
        if head_values:
            matrix[:, : len(head)] = np.array(head_values, dtype=np.float64).T
        return matrix
    columns: list[NDArray[Any]] = []
    for name in head:
        code = codes.get(name)
        if code is not None:
            hint = rows.category_codes.get(name)
            if hint is None:
                columns.append(_category_codes(rows.categorical[name], code))
            else:  # the values are distinct[codes]: each distinct value looked up once
                snapshot_codes, distinct = hint
                columns.append(np.array([code.get(v, np.nan) for v in distinct], dtype=np.float64)[snapshot_codes])
        else:
            columns.append(rows.numeric[name])
    if n <= _ENCODE_BLOCK_ROWS:  # one lead or a request: no slicing
        for j, column in enumerate(columns):
            matrix[:, j] = column
        return matrix
    # Row blocks that stay in cache while every column is written into them: a whole column at
    # a time strides across the matrix and costs several times more on large batches.
    for start in range(0, n, _ENCODE_BLOCK_ROWS):
        block = matrix[start : start + _ENCODE_BLOCK_ROWS]
        for j, column in enumerate(columns):
            block[:, j] = column[start : start + _ENCODE_BLOCK_ROWS]
    return matrix


# Rows of the matrix filled at once by `encode_matrix` (about 1 MB for 60 features).
_ENCODE_BLOCK_ROWS = 2_048


# Up to this many rows a dict look-up per value beats pandas' fixed cost (one lead: 1 row).
_LOOKUP_ROWS = 64


def _category_codes(values: NDArray[Any], code: Mapping[str | None, float]) -> NDArray[Any]:
    # Unseen values are not keys of `code`: NaN. Missing (None) is NaN too unless `code` has a
    # None key (missing kept as a level).
    if len(values) <= _LOOKUP_ROWS:
        return np.array([code.get(v, np.nan) for v in values], dtype=np.float64)
    # Many rows: look each distinct value up once, then spread by factorize code (-1 = None).
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    by_distinct = np.array([code.get(u, np.nan) for u in uniques] + [code.get(None, np.nan)], dtype=np.float64)
    spread: NDArray[Any] = by_distinct[codes]
    return spread


# Below this many rows, one thread: OpenMP start-up costs milliseconds on a busy machine,
# more than a few hundred trees cost on one row.
_SINGLE_THREAD_ROWS = 2_000


def _threads_for(matrix: NDArray[Any]) -> int:
    return 1 if matrix.shape[0] < _SINGLE_THREAD_ROWS else 0


@dataclass(frozen=True)
class Reason:
    """One driver of one lead's score.

    Attributes:
        driver: Business driver (`features.labels.driver_of`), e.g. "pricing_page_view".
        feature: The driver's feature with the largest contribution, e.g. "n_pricing_page_view_7d".
        value: The value shown in the label (a count, a category, days).
        label: Plain words, e.g. "Visited the pricing page 3 times in the last 7 days".
        contribution: Probability points (0-100 scale): the calibrated probability minus the
            probability with this driver's log-odds removed, times 100. +4.2 means "this
            driver lifts the chance of converting from 7.8 % to 12 %".
        log_odds: The driver's TreeSHAP contribution in log-odds (sum over its features).
    """

    driver: str
    feature: str
    value: object
    label: str
    contribution: float  # probability points (0-100 scale) this driver adds to the score
    log_odds: float

    def to_dict(self) -> dict[str, object]:
        return reason_answer(self.driver, self.feature, self.value, self.label, self.contribution)


def reason_answer(driver: str, feature: str, value: object, label: str, contribution: float) -> dict[str, object]:
    """A reason as a score's response holds it (`Reason.to_dict`): its points rounded to 2 decimals."""
    return {"driver": driver, "feature": feature, "value": value, "label": label, "contribution": round(contribution, 2)}


class ScoringModel:
    """A loaded bundle: encodes features, predicts calibrated probabilities, explains them."""

    def __init__(self, booster: lgb.Booster | LinearModel, meta: BundleMeta, hazard: HazardModel | None = None) -> None:
        if model_family_of(booster) != meta.model_family:
            raise ValueError(f"bundle.json says model_family {meta.model_family}, the model is {model_family_of(booster)}")
        if hazard is not None and meta.hazard != hazard.settings:
            meta = meta.model_copy(update={"hazard": hazard.settings})
        if hazard is None and meta.hazard is not None:
            raise ValueError("bundle.json has hazard settings but no hazard model was given (hazard.txt)")
        self.hazard = hazard
        self.booster = booster
        self.meta = meta
        self.spec = meta.feature_spec
        self.schema = meta.resolved_schema()
        self.feature_names = meta.feature_names
        self._codes = level_codes(meta.categorical_levels)  # every request encoded with the same codes
        self.behaviour_plan = BehaviourPlan.of(self.spec)  # and its behaviour features computed by one plan
        of_feature = [driver_of(f, self.spec) for f in self.feature_names]
        # Drivers in order of first appearance (how `reasons` and `strongest_reasons_up` break ties),
        # and the position among them of each feature's driver.
        self.drivers = list(dict.fromkeys(of_feature))
        self.driver_of_column = np.array([self.drivers.index(d) for d in of_feature], dtype=np.intp)
        # Whether each driver is phrased from its own value alone (`features.labels.describe_attribute`).
        self.driver_is_attribute = [is_attribute_driver(d, self.spec) for d in self.drivers]
        attributes = set(self.spec.categorical_features()) | set(self.spec.numeric)
        # Column j of the contributions is an attribute (fit) feature; the others are behaviour.
        self._is_fit = np.array([f in attributes for f in self.feature_names], dtype=bool)
        self._fit_groups = (~self._is_fit).astype(np.intp)  # `fit_engagement_of`'s groups: 0 fit, 1 engagement
        self._quantiles = np.asarray(meta.score_quantiles)
        self._quantile_list: list[float] = self._quantiles.tolist()  # `score_0_100_each`
        self._compiled: CompiledForest | None = None
        self._compiled_looked_up = False  # the cache had no compiled forest for this model
        self._exact: ExactContributions | None = None  # a forest's TreeSHAP tables, built on first use
        self._base_value: float | None = None  # the contributions' last column (`raw_from_fit_engagement`)
        self._phrasings: dict[str, list[DriverPhrasing]] = {}  # language -> each driver's (`phrasings`)

    def __getstate__(self) -> dict[str, object]:
        # Machine code is not sent to other processes (Dask workers): each compiles or loads its own.
        return {**self.__dict__, "_compiled": None, "_compiled_looked_up": False}

    # -- loading and saving -------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path | str) -> ScoringModel:
        """Load a bundle folder; errors name the file and what is wrong.

        Only bundle.json and model.txt (and hazard.txt when bundle.json has `hazard`) are read:
        other files of the folder (report.html, importance.json) are optional.
        """
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"model bundle {directory}: {meta_path.name} is missing")
        if not any((directory / name).is_file() for name in (MODEL_FILE, LINEAR_FILE)):
            raise FileNotFoundError(f"model bundle {directory}: {MODEL_FILE} is missing (or {LINEAR_FILE} for a linear model)")
        meta = BundleMeta.model_validate_json(meta_path.read_text())
        if meta.format != BUNDLE_FORMAT:
            raise ValueError(f"model bundle {directory}: format {meta.format}, this leadscore reads {BUNDLE_FORMAT}")
        model_path = directory / model_file_of(meta.model_family)
        if not model_path.is_file():
            raise FileNotFoundError(f"model bundle {directory}: {model_path.name} is missing (model_family {meta.model_family})")
        booster: lgb.Booster | LinearModel = (
            LinearModel.load(model_path) if meta.model_family == LINEAR_FAMILY else lgb.Booster(model_file=str(model_path))
        )
        if booster.num_feature() != len(meta.feature_names):
            raise ValueError(
                f"model bundle {directory}: {model_path.name} has {booster.num_feature()} features, "
                f"bundle.json lists {len(meta.feature_names)}"
            )
        hazard = HazardModel.load(directory, meta.hazard) if meta.hazard is not None else None
        return cls(booster, meta, hazard)

    def save(self, directory: Path | str) -> Path:
        """Write the bundle folder, with the smoke lead's probability as this model gives it (`meta.smoke`)."""
        from model.check import smoke_check_of  # model.check scores leads, which needs this module

        self.meta = self.meta.model_copy(update={"smoke": smoke_check_of(self)})
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / model_file_of(self.meta.model_family)))
        if self.hazard is not None:
            self.hazard.save(directory)
        (directory / META_FILE).write_text(self.meta.model_dump_json(indent=2))
        return directory

    # -- scoring ------------------------------------------------------------------------
    def encode(self, rows: FeatureRows) -> NDArray[Any]:
        return encode_matrix(rows, self.feature_names, self.meta.categorical_levels, self._codes)

    def raw(self, matrix: NDArray[Any]) -> NDArray[Any]:
        return np.asarray(self.booster.predict(matrix, raw_score=True, num_threads=_threads_for(matrix)))

    def compiled_forest(self, n_rows: int, mode: CompileMode = CompileMode.auto) -> CompiledForest | None:
        """The compiled forest (`model.compiled`) for a batch of `n_rows`, or None for LightGBM's predict.

        Its raw scores equal `raw`'s; loaded once per model object.
        """
        if mode is CompileMode.never or isinstance(self.booster, LinearModel):
            return None
        compile_now = mode is CompileMode.always or n_rows >= COMPILE_MIN_ROWS
        # Looking the cache up hashes the whole model text: once per model object, not per batch.
        if self._compiled is None and (compile_now or not self._compiled_looked_up):
            self._compiled = CompiledForest.for_booster(self.booster, compile_if_missing=compile_now)
            self._compiled_looked_up = True
        return self._compiled

    def probability(self, matrix: NDArray[Any]) -> NDArray[Any]:
        return self.meta.calibration.apply(self.raw(matrix))

    def score_0_100(self, probability: NDArray[Any]) -> NDArray[Any]:
        """Percentile of the probability among validation leads (0 = lowest, 100 = highest)."""
        ranks = np.searchsorted(self._quantiles, probability, side="right") - 1
        percentile: NDArray[Any] = np.minimum(np.maximum(ranks, 0), 100).astype(int)  # np.clip costs more on one lead
        return percentile

    def score_0_100_each(self, probability: Sequence[float]) -> list[int]:
        """`score_0_100` of a few probabilities, without numpy's small arrays: the same scores.

        `bisect_right` makes the comparisons of `searchsorted(side="right")`, a NaN included (it
        places it after every quantile, as numpy does; `tests/test_scoring_fast_paths.py`).
        """
        quantiles = self._quantile_list
        return [_percentile(quantiles, p) for p in probability]

    def tier(self, probability: float) -> TierName:
        return self.meta.tiers.of(probability)

    def is_mql(self, probability: float) -> bool:
        return bool(probability >= self.meta.mql_probability)

    # -- explaining ---------------------------------------------------------------------
    def contributions(self, matrix: NDArray[Any]) -> NDArray[Any]:
        """Exact log-odds contributions (TreeSHAP, or a linear model's terms minus their training means); the last column is the base value.

        A forest's are read from per-tree tables (`model.treeshap`): equal to LightGBM's
        `pred_contrib` within 1e-9 (`tests/test_treeshap.py`), at about the cost of a prediction.
        """
        if isinstance(self.booster, LinearModel):
            return np.asarray(self.booster.predict(matrix, pred_contrib=True, num_threads=_threads_for(matrix)))
        return self._tables().contributions(matrix)

    def _tables(self) -> ExactContributions:
        """The forest's TreeSHAP tables (`model.treeshap`), built on first use; a linear model has none."""
        if self._exact is None:
            assert not isinstance(self.booster, LinearModel)  # the callers answer for a linear model first
            self._exact = ExactContributions.from_booster(self.booster)
        return self._exact

    def contributions_are_cheap(self) -> bool:
        """Whether `contributions` costs about a prediction: a linear model, or a forest whose every tree is tabulated."""
        if isinstance(self.booster, LinearModel):
            return True
        exact = self._tables()
        return exact.tabulated == exact.n_trees

    def fit_engagement_sums(self, contributions: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        """Each row's summed log-odds contributions of its attribute features (fit) and behaviour features (engagement).

        Args:
            contributions: `contributions` of some rows (features then base value), or one row.

        Returns:
            (fit, engagement), one value per row: fit + engagement + base value = the raw score.
        """
        features = np.atleast_2d(contributions)[:, :-1]
        fit: NDArray[Any] = features[:, self._is_fit].sum(axis=1)
        engagement: NDArray[Any] = features[:, ~self._is_fit].sum(axis=1)
        return fit, engagement

    def fit_engagement_of(self, matrix: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        """`fit_engagement_sums` of the rows' contributions, for a forest in one pass without the contributions.

        Every sub-score leadscore gives (and its scale, `subscore_scale_of`) comes from here,
        with or without reasons, so that they are summed in one order everywhere.

        Args:
            matrix: Encoded feature rows.

        Returns:
            (fit, engagement), one value per row.
        """
        if isinstance(self.booster, LinearModel):
            return self.fit_engagement_sums(self.contributions(matrix))
        sums = self._tables().group_sums(matrix, self._fit_groups, 2)
        return sums[:, 0], sums[:, 1]

    def contributions_and_fit_engagement(self, matrix: NDArray[Any]) -> tuple[NDArray[Any], tuple[NDArray[Any], NDArray[Any]]]:
        """`contributions` and `fit_engagement_of` of the same rows in one pass: the values of the two calls, to the bit.

        For a lead scored with reasons and sub-scores (`ExactContributions.contributions_with_group_sums`).
        """
        if isinstance(self.booster, LinearModel):
            contributions = self.contributions(matrix)
            return contributions, self.fit_engagement_sums(contributions)
        contributions, sums = self._tables().contributions_with_group_sums(matrix, self._fit_groups, 2)
        return contributions, (sums[:, 0], sums[:, 1])

    def raw_from_fit_engagement(self, fit: NDArray[Any], engagement: NDArray[Any]) -> NDArray[Any] | None:
        """A forest's raw scores from rows' `fit_engagement_of` sums: the base value plus both, or None for a linear model.

        TreeSHAP's contributions add up to the raw score, so this equals `raw` within rounding
        (`tests/test_treeshap.py`) and spares a prediction of rows whose sub-scores were computed.
        A linear model predicts for less than that: None, predict it.
        """
        if isinstance(self.booster, LinearModel):
            return None
        if self._base_value is None:
            self._base_value = float(self.contributions(np.zeros((1, len(self.feature_names))))[0, -1])
        raw: NDArray[Any] = self._base_value + fit + engagement
        return raw

    def subscore_scale_of(self, matrix: NDArray[Any]) -> SubScoreScale | None:
        """The fit and engagement scales over reference rows, from this model's own exact contributions.

        Args:
            matrix: The encoded reference rows (those `score_quantiles` come from).

        Returns:
            The scale; None when the model lacks attribute or behaviour features (one of the
            two sub-scores would be the same for every lead) or there are no rows.
        """
        if not self._is_fit.any() or self._is_fit.all() or len(matrix) == 0:
            return None
        fit, engagement = self.fit_engagement_of(matrix)
        grid = np.linspace(0, 1, SUBSCORE_QUANTILES)
        return SubScoreScale(
            fit_quantiles=np.quantile(fit, grid).tolist(),
            engagement_quantiles=np.quantile(engagement, grid).tolist(),
            fit_cuts=np.quantile(fit, [1 / 3, 2 / 3]).tolist(),
            engagement_cuts=np.quantile(engagement, [1 / 3, 2 / 3]).tolist(),
        )

    def with_subscore_scale(self, matrix: NDArray[Any]) -> ScoringModel:
        """This model with `meta.subscores` set from reference rows (`subscore_scale_of`)."""
        return ScoringModel(self.booster, self.meta.model_copy(update={"subscores": self.subscore_scale_of(matrix)}), self.hazard)

    def with_hazard(self, hazard: HazardModel | None) -> ScoringModel:
        """This model with a hazard (`model.hazard`) over its own encoded features, or without one (None)."""
        meta = self.meta if hazard is not None else self.meta.model_copy(update={"hazard": None})
        return ScoringModel(self.booster, meta, hazard)

    def subscores(self, fit: float, engagement: float) -> tuple[int, int, SubScoreCell] | None:
        """A lead's fit and engagement sub-scores (0-100 percentiles) and its fit x engagement cell.

        Args:
            fit, engagement: The lead's sums from `fit_engagement_sums`.

        Returns:
            (fit 0-100, engagement 0-100, cell "A1".."C3": A is the top third of fit, 1 the top
            third of engagement), or None when the bundle has no scales.
        """
        scale = self.meta.subscores
        if scale is None:
            return None
        fit_score = _percentile(scale.fit_quantiles, fit)
        engagement_score = _percentile(scale.engagement_quantiles, engagement)
        letter = "A" if fit >= scale.fit_cuts[1] else ("B" if fit >= scale.fit_cuts[0] else "C")
        digit = "1" if engagement >= scale.engagement_cuts[1] else ("2" if engagement >= scale.engagement_cuts[0] else "3")
        cell: SubScoreCell = _CELLS[letter + digit]
        return fit_score, engagement_score, cell

    def phrasings(self, language: str) -> list[DriverPhrasing]:
        """Each driver's phrasing (`features.labels.driver_phrasing`) in `language`, in `drivers` order; made once per language.

        Raises:
            ValueError: `language` is not "en" or "fr".
        """
        found = self._phrasings.get(language)
        if found is None:
            found = self._phrasings[language] = [driver_phrasing(d, self.spec, language) for d in self.drivers]
        return found

    def ranked_drivers(self, contrib_row: NDArray[Any], top_k: int = 3) -> RankedDrivers:
        """The drivers `reasons` shows for one lead, unphrased: up then down, each sorted by absolute log-odds.

        Args:
            contrib_row: One row of `contributions` (features then base value).
            top_k: How many drivers each way.
        """
        return self.ranked_drivers_of(np.asarray(contrib_row)[None, :], top_k)[0]

    def ranked_drivers_of(self, contributions: NDArray[Any], top_k: int = 3) -> list[RankedDrivers]:
        """`ranked_drivers` of each row of `contributions`, the rows' sums, ranks and calibration in one call each.

        Args:
            contributions: Rows of `contributions` (features then base value).
            top_k: How many drivers each way.
        """
        contributions = np.asarray(contributions, dtype=np.float64)
        n, n_drivers = contributions.shape[0], len(self.drivers)
        raw_totals = contributions.sum(axis=1).tolist()
        # Each driver's features added in feature order from 0.0, as one add after another would:
        # one bincount over the rows laid end to end, each row's drivers in cells of their own
        # (one lead's row alone: the same adds, without the cells).
        if n == 1:
            sums = np.bincount(self.driver_of_column, weights=contributions[0, :-1], minlength=n_drivers)[None, :]
        else:
            cells = (np.arange(n)[:, None] * n_drivers + self.driver_of_column[None, :]).ravel()
            sums = np.bincount(cells, weights=contributions[:, :-1].ravel(), minlength=n * n_drivers).reshape(n, n_drivers)
        # Rank by log-odds (probability points can be 0 on a flat stretch of the calibration);
        # ties keep the order of first appearance.
        order = np.argsort(sums, axis=1, kind="stable").tolist()
        picked: list[tuple[list[int], list[int], list[float]]] = []
        to_calibrate: list[float] = []
        for raw_total, driver_sums, ranked in zip(raw_totals, sums.tolist(), order, strict=True):
            up = [j for j in ranked[::-1][:top_k] if driver_sums[j] > 0]
            down = [j for j in ranked[:top_k] if driver_sums[j] < 0]
            log_odds = [driver_sums[j] for j in up + down]
            picked.append((up, down, log_odds))
            if log_odds:  # the lead's probability and, for each driver, the probability without its log-odds
                to_calibrate += [raw_total, *[raw_total - x for x in log_odds]]
        # A lead's few values in Python floats, a batch's in one array: the same values to the bit
        # (tests/test_scoring_fast_paths.py).
        calibration = self.meta.calibration
        few = len(to_calibrate) <= 4 * FEW_ROWS
        calibrated = calibration.apply_each(to_calibrate) if few else calibration.apply(np.array(to_calibrate)).tolist()
        out, at = [], 0
        for up, down, log_odds in picked:
            if not log_odds:
                out.append(RankedDrivers([], [], [], []))
                continue
            p_full, without = calibrated[at], calibrated[at + 1 : at + 1 + len(log_odds)]
            at += 1 + len(log_odds)
            out.append(RankedDrivers(up, down, log_odds, [100.0 * (p_full - p) for p in without]))
        return out

    def reasons(
        self,
        contrib_row: NDArray[Any],
        values: Mapping[str, object],
        top_k: int = 3,
        language: str = "en",
    ) -> tuple[list[Reason], list[Reason]]:
        """Top drivers pushing one lead's probability up and down.

        A driver's contribution is the sum of its features' TreeSHAP log-odds, expressed in
        probability points (the unit of `Reason.contribution`): calibrated probability minus
        the probability with that driver's log-odds removed, times 100. Points of several
        reasons do not add up exactly (the calibration is not linear); log-odds do.

        Args:
            contrib_row: One row of `contributions` (features then base value).
            values: The lead's feature values by name (`FeatureRows.row`).
            top_k: How many reasons each way.
            language: "en" or "fr".

        Returns:
            (up, down), each sorted by absolute contribution.
        """
        ranked = self.ranked_drivers(contrib_row, top_k)
        reasons = [Reason(*parts) for parts in self._phrased(ranked, values, language)]
        return reasons[: len(ranked.up)], reasons[len(ranked.up) :]

    def reason_answers(
        self, contrib_row: NDArray[Any], values: Mapping[str, object], top_k: int = 3, language: str = "en"
    ) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """`reasons` as their answers (`Reason.to_dict`): what a score's response holds, without the `Reason` objects."""
        return self.ranked_answers(self.ranked_drivers(contrib_row, top_k), values, language)

    def ranked_answers(
        self, ranked: RankedDrivers, values: Mapping[str, object], language: str = "en"
    ) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """`reason_answers` of drivers already ranked (`ranked_drivers_of` ranks a batch's at once)."""
        answers = [reason_answer(*parts[:5]) for parts in self._phrased(ranked, values, language)]
        return answers[: len(ranked.up)], answers[len(ranked.up) :]

    def _phrased(self, ranked: RankedDrivers, values: Mapping[str, object], language: str) -> list[tuple[str, str, object, str, float, float]]:
        """Each ranked driver's `Reason` fields, up then down: driver, feature, value, label, points, log-odds."""
        if not ranked.log_odds:
            return []
        phrasings = self.phrasings(language)
        out = []
        for j, log_odds, points in zip(ranked.up + ranked.down, ranked.log_odds, ranked.points, strict=True):
            # The feature named is the one whose value the label quotes, not the largest contributor.
            phrase = phrasings[j](values)
            out.append((self.drivers[j], phrase.feature, phrase.value, phrase.label, points, log_odds))
        return out


class RankedDrivers(NamedTuple):
    """The drivers `ScoringModel.reasons` shows for one lead, before they are phrased.

    Attributes:
        up: Positions in `ScoringModel.drivers` of those lifting the score, the strongest first.
        down: Of those lowering it, the strongest first.
        log_odds: Each one's summed TreeSHAP log-odds, `up` then `down`.
        points: Each one's probability points (0-100 scale), as `Reason.contribution`, in that order.
    """

    up: list[int]
    down: list[int]
    log_odds: list[float]
    points: list[float]


_CELLS: dict[str, SubScoreCell] = {
    "A1": "A1", "A2": "A2", "A3": "A3", "B1": "B1", "B2": "B2", "B3": "B3", "C1": "C1", "C2": "C2", "C3": "C3",
}  # fmt: skip


def _percentile(quantiles: list[float], value: float) -> int:
    # `score_0_100` of one value: the number of reference quantiles at or below it, less one, in 0..100
    # (the scores' 101 quantiles, and the sub-scores'). bisect on the stored list: np.searchsorted
    # would convert the list to an array on every call.
    rank = bisect.bisect_right(quantiles, value) - 1
    return min(max(rank, 0), SUBSCORE_QUANTILES - 1)


def model_family_of(model: lgb.Booster | LinearModel) -> ModelFamily:
    """The bundle's `model_family` for a fitted model."""
    return "linear" if isinstance(model, LinearModel) else "lightgbm"


def model_file_of(family: ModelFamily) -> str:
    """The bundle file that holds a model of this family."""
    return LINEAR_FILE if family == LINEAR_FAMILY else MODEL_FILE


def content_hash(*parts: bytes) -> str:
    """Short sha256 of some bytes, for versions and data fingerprints."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:12]


def read_meta(directory: Path | str) -> dict[str, Any]:
    """bundle.json as a dict (for tools that need no booster)."""
    meta: dict[str, Any] = json.loads((Path(directory) / META_FILE).read_text())
    return meta
