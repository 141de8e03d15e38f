"""Drift monitoring: recent scores and features against the training distribution, by PSI.

Training stores a `DriftReference` in the bundle (`reference_distribution`): bins of every
feature over the training snapshots, and of the calibrated probability over the validation
snapshots. `drift_table` puts the features and probabilities of recent scores (the score log)
into the same bins and computes the population stability index of each:

    PSI = sum over bins of (recent share - reference share) * ln(recent share / reference share)

Below 0.1 the distribution is stable (`ok`), from 0.1 to 0.2 it has moved (`watch`), from 0.2
on it has drifted (`drift`): the usual reading of PSI in credit and marketing scoring.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from features.contract import Dataset
from features.engine import FeatureRows, snapshot_features
from features.snapshots import snapshot_times
from model.bundle import Bins, DriftReference, ScoringModel

PSI_WATCH = 0.1
PSI_DRIFT = 0.2
N_BINS = 10
MAX_LEVELS = 20  # rarer levels share the "other" bin: tiny bins make PSI noisy
# An empty bin's share, so that ln() stays finite (the usual floor in PSI implementations).
SHARE_FLOOR = 1e-4
MIN_ROWS = 200  # below this many recent rows a PSI says little; the table says so

DriftStatus = Literal["ok", "watch", "drift"]
PROBABILITY = "probability"


def numeric_bins(values: NDArray[Any], n_bins: int = N_BINS) -> Bins:
    """Quantile bins of a numeric variable (fewer when values repeat), plus a missing bin."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    quantiles = np.linspace(0, 1, n_bins + 1)[1:-1]
    edges = np.unique(np.quantile(present, quantiles)) if present.size else np.array([])
    bins = Bins(kind="numeric", edges=edges.tolist(), proportions=[])
    return bins.model_copy(update={"proportions": _shares(bin_counts(bins, values)).tolist()})


def categorical_bins(values: NDArray[Any], max_levels: int = MAX_LEVELS) -> Bins:
    """One bin per frequent level (at most `max_levels`), "other", and missing."""
    series = pd.Series(values, dtype=object)
    levels = series.dropna().value_counts().index[:max_levels].tolist()
    bins = Bins(kind="categorical", levels=[str(level) for level in levels], proportions=[])
    return bins.model_copy(update={"proportions": _shares(bin_counts(bins, values)).tolist()})


def bin_counts(bins: Bins, values: NDArray[Any] | pd.Series) -> NDArray[Any]:
    """How many values fall in each bin of `bins` (the last bin counts missing values)."""
    if bins.kind == "numeric":
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        missing = np.isnan(numbers)
        index = np.searchsorted(np.asarray(bins.edges), numbers[~missing], side="left")
        counts = np.bincount(index, minlength=len(bins.edges) + 1)
        return np.append(counts, missing.sum())
    series = pd.Series(values, dtype=object)
    missing = series.isna()
    position = {level: i for i, level in enumerate(bins.levels)}
    other = len(bins.levels)
    index = np.array([position.get(str(v), other) for v in series[~missing]], dtype=np.int64)
    counts = np.bincount(index, minlength=len(bins.levels) + 1)
    return np.append(counts, missing.sum())


def _shares(counts: NDArray[Any]) -> NDArray[Any]:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def psi(reference: NDArray[Any] | list[float], recent: NDArray[Any] | list[float]) -> float:
    """Population stability index between two share vectors over the same bins."""
    expected = np.maximum(np.asarray(reference, dtype=np.float64), SHARE_FLOOR)
    actual = np.maximum(np.asarray(recent, dtype=np.float64), SHARE_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_status(value: float) -> DriftStatus:
    """`ok` below 0.1, `watch` from 0.1, `drift` from 0.2."""
    if value >= PSI_DRIFT:
        return "drift"
    return "watch" if value >= PSI_WATCH else "ok"


def reference_distribution(
    feature_rows: FeatureRows, probabilities: NDArray[Any], n_bins: int = N_BINS
) -> DriftReference:
    """The bins a bundle keeps for monitoring.

    Args:
        feature_rows: Features of the training snapshots.
        probabilities: Calibrated probabilities of the validation snapshots.
        n_bins: Quantile bins per numeric variable (fewer when values repeat).
    """
    features = {name: categorical_bins(values) for name, values in feature_rows.categorical.items()}
    features.update({name: numeric_bins(values, n_bins) for name, values in feature_rows.numeric.items()})
    n_rows = len(next(iter({**feature_rows.categorical, **feature_rows.numeric}.values())))
    return DriftReference(
        features=features,
        probability=numeric_bins(np.asarray(probabilities), n_bins),
        n_features_rows=int(n_rows),
        n_probability_rows=int(len(probabilities)),
    )


def reference_from_data(model: ScoringModel, data: Dataset, offsets_days: list[float]) -> DriftReference:
    """A reference recomputed for a bundle saved without one: snapshots of a data set at the
    training offsets, their features, and the model's probabilities on them.

    Args:
        model: The bundle.
        data: Validated leads and interactions, such as the training data.
        offsets_days: Snapshot offsets after creation (`training.snapshot_offsets_days`).

    Raises:
        ValueError: The data yields no snapshot.
    """
    snapshots = snapshot_times(data.leads, offsets_days, data.data_end)
    if snapshots.empty:
        raise ValueError("the reference data yields no snapshot")
    rows = snapshot_features(data.leads, data.interactions, snapshots, model.spec)
    return reference_distribution(rows, model.probability(model.encode(rows)))


def drift_table(reference: DriftReference, features: pd.DataFrame, probabilities: NDArray[Any]) -> pd.DataFrame:
    """PSI of the probability and of every reference feature, recent rows against the reference.

    Args:
        reference: The bundle's `DriftReference`.
        features: Recent feature values, one column per feature (`ScoreRecord.features`); a
            feature missing from the frame counts as missing in every row.
        probabilities: Recent calibrated probabilities.

    Returns:
        One row per variable, `probability` first then features by decreasing PSI, with the
        columns `variable`, `psi`, `status` (ok / watch / drift), `missing_share` (recent
        rows where the variable is missing) and `reference_missing_share`.
    """
    rows = [_drift_row(PROBABILITY, reference.probability, np.asarray(probabilities, dtype=np.float64))]
    n = len(features)
    feature_rows = [
        _drift_row(name, bins, features[name].to_numpy() if name in features else np.full(n, None, dtype=object))
        for name, bins in reference.features.items()
    ]
    feature_rows.sort(key=lambda row: row["psi"], reverse=True)
    return pd.DataFrame(rows + feature_rows)


class _DriftRow(TypedDict):
    variable: str
    psi: float
    status: DriftStatus
    missing_share: float
    reference_missing_share: float


def _drift_row(name: str, bins: Bins, values: NDArray[Any]) -> _DriftRow:
    recent = _shares(bin_counts(bins, values))
    value = psi(bins.proportions, recent)
    return {
        "variable": name,
        "psi": round(value, 4),
        "status": drift_status(value),
        "missing_share": round(float(recent[-1]), 4) if len(values) else float("nan"),
        "reference_missing_share": round(bins.proportions[-1], 4),
    }
