"""When a lead converts: a discrete-time hazard over the bundle's snapshot features.

The horizon is cut into intervals (0, e_0], (e_0, e_1], ..., (e_{K-2}, e_{K-1}] of days after
`as_of` (e.g. 7, 14, 30, 60, 90). The hazard model gives, for a lead unconverted at `as_of`,
h_k = P(converts in interval k | unconverted at its start; the features at `as_of`). It is a
LightGBM binary model over the bundle's encoded features plus two interval columns
(`INTERVAL_FEATURES`: the interval's start and length in days), trained on person-period rows
(`training.hazard`). From the h_k:

- P(convert within t days) = 1 - prod_{k: e_k <= t} (1 - h_k); between two ends the hazard is
  constant within the interval, so S(s_k + u) = S(s_k) * (1 - h_k) ** (u / length_k).
- Expected days to convert: the mean time to conversion *given conversion within the last
  interval end* (the horizon), under that same within-interval constant hazard (a truncated
  exponential per interval, whose mean tends to the midpoint when h_k is small). It answers
  "if this lead converts within the horizon, how soon?", not an unconditional mean (which
  the many leads that never convert would make meaningless).

The booster is `hazard.txt` in the bundle, its settings `BundleMeta.hazard`. This module depends
on LightGBM and numpy only, so serving can use it without training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

HAZARD_FILE = "hazard.txt"
INTERVAL_FEATURES: tuple[str, str] = ("hazard_interval_start_days", "hazard_interval_days")
# Below this many rows, one thread (as `model.bundle`): OpenMP start-up costs more than a lead.
_SINGLE_THREAD_ROWS = 2_000


class HazardSettings(BaseModel):
    """The JSON half of the hazard: its intervals, features and how it was fit and measured.

    Attributes:
        interval_ends_days: Ends of the intervals in days after `as_of`, ascending; the last is
            the horizon. Interval k is (previous end, interval_ends_days[k]].
        horizons_days: The horizons answered (`probability_by_horizon`), each an interval end.
        feature_names: Columns of the hazard matrix: the bundle's features, then `INTERVAL_FEATURES`.
        trees: Boosting rounds (chosen by early stopping on the validation period).
        metrics: Test-period figures of the measured hazard (`training.hazard.evaluate_hazard`).
        training: What it was fit on (rows, cutoffs).
    """

    model_config = ConfigDict(extra="forbid")

    interval_ends_days: list[float] = Field(min_length=1)
    horizons_days: list[float] = Field(min_length=1)
    feature_names: list[str]
    trees: int = Field(ge=1)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _intervals(self) -> HazardSettings:
        ends = self.interval_ends_days
        if ends[0] <= 0 or any(b <= a for a, b in zip(ends, ends[1:], strict=False)):
            raise ValueError(f"hazard.interval_ends_days must be positive and ascending, got {ends}")
        missing = [h for h in self.horizons_days if h not in ends]
        if missing:
            raise ValueError(f"hazard.horizons_days {missing} are not interval ends {ends}")
        if tuple(self.feature_names[-2:]) != INTERVAL_FEATURES:
            raise ValueError(f"hazard.feature_names must end with {list(INTERVAL_FEATURES)}, got {self.feature_names[-2:]}")
        return self

    def starts_and_lengths(self) -> tuple[NDArray[Any], NDArray[Any]]:
        """Each interval's start and length in days."""
        ends = np.asarray(self.interval_ends_days, dtype=np.float64)
        starts = np.concatenate([[0.0], ends[:-1]])
        return starts, ends - starts


def interval_matrix(matrix: NDArray[Any], starts: NDArray[Any], lengths: NDArray[Any], intervals: NDArray[Any] | None = None,
                    rows: NDArray[Any] | None = None) -> NDArray[Any]:  # fmt: skip
    """The hazard matrix: snapshot rows beside their interval's start and length.

    Args:
        matrix: Encoded snapshot features (n, p).
        starts, lengths: Every interval's start and length in days (K,).
        intervals: Interval index of each output row; with `rows`, the person-period rows
            (`training.hazard.person_period`). None: every snapshot over every interval,
            snapshot-major (row i * K + k), as scoring needs.
        rows: Snapshot index of each output row (with `intervals`).

    Returns:
        (m, p + 2) float64.
    """
    if intervals is None or rows is None:
        k = len(starts)
        rows = np.repeat(np.arange(len(matrix)), k)
        intervals = np.tile(np.arange(k), len(matrix))
    out = np.empty((len(rows), matrix.shape[1] + 2), dtype=np.float64)
    out[:, :-2] = matrix[rows]
    out[:, -2] = starts[intervals]
    out[:, -1] = lengths[intervals]
    return out


def within_days(hazards: NDArray[Any], interval_ends_days: Sequence[float], days: Sequence[float] | NDArray[Any]) -> NDArray[Any]:
    """P(convert within each of `days`) from interval hazards, constant hazard within an interval.

    Args:
        hazards: (n, K) interval hazards h_k in [0, 1].
        interval_ends_days: The K interval ends, ascending.
        days: Times in (0, last end] after `as_of`.

    Returns:
        (n, len(days)): in [0, 1], non-decreasing along `days` when `days` is ascending.

    Raises:
        ValueError: A day outside (0, last interval end].
    """
    ends = np.asarray(interval_ends_days, dtype=np.float64)
    t = np.asarray(days, dtype=np.float64)
    if t.size and (t.min() <= 0 or t.max() > ends[-1]):
        raise ValueError(f"days must be in (0, {ends[-1]:g}], got {t.min():g} to {t.max():g}")
    starts = np.concatenate([[0.0], ends[:-1]])
    log_keep = np.log1p(-np.clip(hazards, 0.0, 1.0 - 1e-12))
    before = np.concatenate([np.zeros((len(hazards), 1)), np.cumsum(log_keep, axis=1)[:, :-1]], axis=1)
    k = np.searchsorted(ends, t, side="left")
    share = (t - starts[k]) / (ends[k] - starts[k])
    survival = np.exp(before[:, k] + share * log_keep[:, k])
    probability: NDArray[Any] = np.clip(1.0 - survival, 0.0, 1.0)
    return probability


def expected_days(hazards: NDArray[Any], interval_ends_days: Sequence[float]) -> NDArray[Any]:
    """Mean days to conversion given conversion within the last interval end (see the module docstring).

    Args:
        hazards: (n, K) interval hazards.
        interval_ends_days: The K interval ends, ascending.

    Returns:
        (n,) days in (0, last end]; NaN for a row with no chance of converting (all h_k = 0).
    """
    ends = np.asarray(interval_ends_days, dtype=np.float64)
    starts = np.concatenate([[0.0], ends[:-1]])
    lengths = ends - starts
    h = np.clip(hazards, 0.0, 1.0 - 1e-12)
    survival_before = np.concatenate([np.ones((len(h), 1)), np.cumprod(1.0 - h, axis=1)[:, :-1]], axis=1)
    converts_in = survival_before * h
    # Within an interval, the time of conversion given conversion there: an exponential with
    # rate x / length truncated at the length, whose mean is length * (1/x - 1/(e^x - 1)).
    x = -np.log1p(-h)
    small = x < 1e-6
    x_safe = np.where(small, 1.0, x)
    share = np.where(small, 0.5 - x / 12.0, 1.0 / x_safe - 1.0 / np.expm1(x_safe))
    mean_in = starts + lengths * share
    total = converts_in.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        days: NDArray[Any] = np.where(total > 0, (converts_in * mean_in).sum(axis=1) / total, np.nan)
    return days


class HazardModel:
    """A loaded hazard: interval hazards, probabilities by horizon and expected days for encoded snapshots."""

    def __init__(self, booster: lgb.Booster, settings: HazardSettings) -> None:
        if booster.num_feature() != len(settings.feature_names):
            raise ValueError(
                f"{HAZARD_FILE} has {booster.num_feature()} features, bundle.json hazard.feature_names lists "
                f"{len(settings.feature_names)}"
            )
        self.booster = booster
        self.settings = settings
        self._starts, self._lengths = settings.starts_and_lengths()

    @classmethod
    def load(cls, directory: Path, settings: HazardSettings) -> HazardModel:
        path = directory / HAZARD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"model bundle {directory}: bundle.json has hazard settings but {HAZARD_FILE} is missing")
        return cls(lgb.Booster(model_file=str(path)), settings)

    def save(self, directory: Path) -> None:
        self.booster.save_model(str(directory / HAZARD_FILE))

    def interval_hazards(self, matrix: NDArray[Any]) -> NDArray[Any]:
        """(n, K) hazards h_k of encoded snapshots (the bundle's `encode`)."""
        rows = interval_matrix(matrix, self._starts, self._lengths)
        threads = 1 if len(rows) < _SINGLE_THREAD_ROWS else 0
        return np.asarray(self.booster.predict(rows, num_threads=threads)).reshape(len(matrix), len(self._starts))

    def by_horizon(self, matrix: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        """P(convert within each of `settings.horizons_days`) (n, H) and expected days to convert (n,)."""
        hazards = self.interval_hazards(matrix)
        ends = self.settings.interval_ends_days
        return within_days(hazards, ends, self.settings.horizons_days), expected_days(hazards, ends)

    def horizon_keys(self) -> list[str]:
        """Keys of `probability_by_horizon`: days as text, "7", "30", "90"."""
        return [f"{h:g}" for h in self.settings.horizons_days]
