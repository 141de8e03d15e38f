"""Scale-out on Dask: features per partition of leads, distributed LightGBM, batch scoring.

The engine functions never need another lead's rows, so a partition of leads (its leads,
their interactions and their snapshots) is computed anywhere with the single-machine code:
`features.engine.snapshot_features` per partition gives exactly the single-machine features,
and `leadscore.scoring.score_table` per partition gives exactly its scores.

Training uses `lightgbm.dask` (data-parallel LightGBM across the workers). It has no early
stopping, so `DaskEngine.fit_booster` grows the model in blocks of rounds, continuing from
the previous block's trees, and watches the validation log loss between blocks on the
client: it stops and cuts the model where single-machine early stopping would.

The client (the machine running `leadscore`) still reads and validates the tables and runs
the light steps (snapshots, calibration, baselines, metrics); the workers do the heavy ones.
`docs/scale-out.md` says when that pays.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

from features.engine import FeatureRows, snapshot_features
from features.spec import FeatureSpec
from leadscore.bundle import ScoringModel
from leadscore.compiled import CompileMode
from leadscore.scoring import score_table

# Rounds grown per block between two looks at the validation loss.
DEFAULT_BLOCK_ROUNDS = 50

# Native LightGBM names of the pipeline's parameters -> the scikit-learn names that
# `DaskLGBMClassifier` takes (passing both spellings makes LightGBM pick one and warn).
_SKLEARN_NAMES = {
    "feature_fraction": "colsample_bytree",
    "bagging_fraction": "subsample",
    "bagging_freq": "subsample_freq",
    "lambda_l2": "reg_lambda",
    "seed": "random_state",
}


@contextmanager
def dask_client(scheduler: str | None = None, *, n_workers: int | None = None) -> Iterator[Client]:
    """A client of the Dask cluster at `scheduler`, or of a LocalCluster when it is None.

    Args:
        scheduler: Scheduler address, e.g. "tcp://10.0.0.5:8786". None starts a LocalCluster
            on this machine (one single-threaded worker process per core unless `n_workers`).
        n_workers: Workers of the LocalCluster (ignored with a scheduler address).
    """
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


@dataclass(frozen=True)
class LeadPartition:
    """A slice of leads with all of their interactions and snapshots.

    Attributes:
        leads: The partition's leads.
        interactions: Every interaction of those leads.
        snapshots: Every snapshot of those leads.
        positions: Row positions of `snapshots` in the full snapshot frame.
    """

    leads: pd.DataFrame
    interactions: pd.DataFrame
    snapshots: pd.DataFrame
    positions: np.ndarray


def partition_by_lead(
    leads: pd.DataFrame, interactions: pd.DataFrame, snapshots: pd.DataFrame, n_partitions: int
) -> list[LeadPartition]:
    """Split the tables into `n_partitions` slices of the leads that have snapshots, each lead whole.

    Leads are sliced in table order, so sorted interactions stay sorted within a slice; leads
    without a snapshot (and their interactions) are left out, as the single-machine build
    ignores them too.

    Args:
        leads: `lead_id` (unique) and the other lead columns.
        interactions: `lead_id` and the other interaction columns; rows of unknown leads are
            dropped.
        snapshots: `lead_id`, `as_of`; every lead_id must be in `leads`.
        n_partitions: How many slices (fewer when fewer leads have snapshots).

    Returns:
        Non-empty partitions; their snapshot positions together cover every snapshot once.
    """
    lead_index = pd.Index(leads["lead_id"])
    if not lead_index.is_unique:
        raise ValueError("partition_by_lead: leads.lead_id has duplicates")
    snap_codes = lead_index.get_indexer(snapshots["lead_id"])
    if (snap_codes < 0).any():
        missing = snapshots["lead_id"][snap_codes < 0].unique()[:5].tolist()
        raise ValueError(f"partition_by_lead: snapshots reference unknown lead_id (e.g. {missing})")
    used = np.unique(snap_codes)
    n_partitions = max(1, min(n_partitions, used.size))
    part_of_lead = np.full(len(leads) + 1, -1)  # the extra last slot: unknown lead (code -1)
    part_of_lead[used] = np.arange(used.size) * n_partitions // max(used.size, 1)
    event_part = part_of_lead[lead_index.get_indexer(interactions["lead_id"])]
    snap_part = part_of_lead[snap_codes]
    parts = []
    for k in range(n_partitions):
        positions = np.flatnonzero(snap_part == k)
        if positions.size == 0:
            continue
        parts.append(
            LeadPartition(
                leads=leads[part_of_lead[:-1] == k],
                interactions=interactions[event_part == k],
                snapshots=snapshots.iloc[positions],
                positions=positions,
            )
        )
    return parts


def _features_of(part: LeadPartition, spec: FeatureSpec) -> FeatureRows:
    return snapshot_features(part.leads, part.interactions, part.snapshots, spec)


def _score_part(
    part: LeadPartition, model: ScoringModel, as_of: datetime, with_reasons: bool, language: str, compiled: CompileMode
) -> pd.DataFrame:
    return score_table(model, part.leads, part.interactions, as_of, with_reasons=with_reasons, language=language,
                       compiled=compiled)


def _gather_rows(parts: list[LeadPartition], results: list[FeatureRows], n_rows: int) -> FeatureRows:
    first = results[0]
    categorical = {k: np.empty(n_rows, dtype=object) for k in first.categorical}
    numeric = {k: np.empty(n_rows, dtype=np.float64) for k in first.numeric}
    for part, rows in zip(parts, results):
        for k, v in rows.categorical.items():
            categorical[k][part.positions] = v
        for k, v in rows.numeric.items():
            numeric[k][part.positions] = v
    return FeatureRows(categorical=categorical, numeric=numeric)


def _logloss(y: np.ndarray, raw: np.ndarray) -> float:
    # Binary log loss from raw log-odds, stable for large |raw|.
    return float(np.mean(np.logaddexp(0.0, raw) - y * raw))


class DaskEngine:
    """The pipeline's heavy steps on a Dask cluster.

    Args:
        client: A connected Dask client (`dask_client`).
        partitions_per_worker: Lead partitions per worker for features and scoring; more than
            one lets a fast worker take over from a slow one.
        block_rounds: Boosting rounds grown between two looks at the validation loss.
    """

    def __init__(
        self, client: Client, *, partitions_per_worker: int = 2, block_rounds: int = DEFAULT_BLOCK_ROUNDS
    ) -> None:
        self.client = client
        self.partitions_per_worker = partitions_per_worker
        self.block_rounds = block_rounds

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info()["workers"]))

    def _partitions(self, leads: pd.DataFrame, interactions: pd.DataFrame, snapshots: pd.DataFrame) -> list[LeadPartition]:
        return partition_by_lead(leads, interactions, snapshots, self.n_workers * self.partitions_per_worker)

    def snapshot_features(
        self, leads: pd.DataFrame, interactions: pd.DataFrame, snapshots: pd.DataFrame, spec: FeatureSpec
    ) -> FeatureRows:
        """`features.engine.snapshot_features`, one task per partition of leads.

        Same arguments and result (rows in the order of `snapshots`), same values.
        """
        parts = self._partitions(leads, interactions, snapshots)
        if not parts:
            return snapshot_features(leads, interactions, snapshots, spec)
        # Scattered first: the slices go straight to the workers, not through the task graph.
        futures = self.client.map(_features_of, self.client.scatter(parts), spec=spec, pure=False)
        return _gather_rows(parts, self.client.gather(futures), len(snapshots))

    def fit_booster(
        self,
        params: dict[str, Any],
        train: tuple[np.ndarray, np.ndarray],
        valid: tuple[np.ndarray, np.ndarray],
        *,
        feature_names: list[str],
        categorical: list[int],
        max_rounds: int,
        early_stopping_rounds: int,
    ) -> lgb.Booster:
        """Distributed LightGBM with early stopping on validation log loss.

        Same contract as `training.pipeline.fit_lightgbm`: the booster returned holds the
        trees up to the best validation iteration. Rounds are grown in blocks of
        `block_rounds`, each continuing from the trees so far; between blocks the client
        adds the new trees' raw scores on the validation matrix and tracks the loss per
        round, stopping `early_stopping_rounds` rounds after the best.
        """
        import dask.array as da
        from lightgbm.dask import DaskLGBMClassifier

        x_train, y_train = train
        x_valid, y_valid = valid
        rows_per_chunk = -(-len(y_train) // self.n_workers)
        x = da.from_array(x_train, chunks=(rows_per_chunk, x_train.shape[1]))
        y = da.from_array(np.asarray(y_train), chunks=rows_per_chunk)
        x, y = self.client.persist([x, y])
        # lightgbm.dask sets each worker's threads to the worker's own: num_threads is dropped.
        estimator_params = {
            _SKLEARN_NAMES.get(k, k): v for k, v in params.items() if k not in ("metric", "num_threads")
        }

        booster: lgb.Booster | None = None
        raw_valid = np.zeros(len(y_valid))
        best_loss, best_round, rounds = np.inf, 0, 0
        while rounds < max_rounds and rounds - best_round < early_stopping_rounds:
            grow = min(self.block_rounds, max_rounds - rounds)
            model = DaskLGBMClassifier(client=self.client, n_estimators=grow, **estimator_params)
            with warnings.catch_warnings():
                # lightgbm.dask sets each worker's threads itself and says so about n_jobs.
                warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
                model.fit(x, y, feature_name=feature_names, categorical_feature=categorical, init_model=booster)
            booster = model.to_local().booster_
            for i in range(rounds, booster.current_iteration()):
                raw_valid += booster.predict(x_valid, start_iteration=i, num_iteration=1, raw_score=True)
                loss = _logloss(y_valid, raw_valid)
                if loss < best_loss:
                    best_loss, best_round = loss, i + 1
            if booster.current_iteration() == rounds:
                break  # nothing left to learn: LightGBM added no tree
            rounds = booster.current_iteration()
        if booster is None:
            raise ValueError("fit_booster: max_rounds must be at least 1")
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=max(best_round, 1)))

    def score_table(
        self,
        model: ScoringModel,
        leads: pd.DataFrame,
        interactions: pd.DataFrame,
        as_of: datetime,
        *,
        with_reasons: bool = False,
        language: str = "en",
        compiled: CompileMode = CompileMode.auto,
    ) -> pd.DataFrame:
        """`leadscore.scoring.score_table`, one task per partition of leads; same rows, same order.

        Each worker compiles the forest for its own CPU (`leadscore.compiled`) when `compiled`
        asks for it, or finds it in its cache.
        """
        snapshots = pd.DataFrame({"lead_id": leads["lead_id"].to_numpy(), "as_of": pd.Timestamp(as_of)})
        parts = self._partitions(leads, interactions, snapshots)
        if not parts:
            return score_table(model, leads, interactions, as_of, with_reasons=with_reasons, language=language,
                               compiled=compiled)
        shared = self.client.scatter(model, broadcast=True)
        futures = self.client.map(
            _score_part, self.client.scatter(parts), model=shared, as_of=as_of,
            with_reasons=with_reasons, language=language, compiled=compiled, pure=False,
        )
        return pd.concat(self.client.gather(futures), ignore_index=True)
