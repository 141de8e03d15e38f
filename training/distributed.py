"""Distributed LightGBM on a Dask cluster, for `leadscore train --engine dask`.

Training uses `lightgbm.dask` (data-parallel LightGBM across the workers). It has no early
stopping, so `DaskEngine.fit_booster` grows the model in blocks of rounds, continuing from
the previous block's trees, and watches the validation log loss between blocks on the
client: it stops and cuts the model where single-machine early stopping would.

The client (the machine running `leadscore`) still reads and validates the tables and runs
the light steps (snapshots, calibration, baselines, metrics); the workers do the heavy ones,
features and scoring through `scaleout.dask`. `docs/scale-out.md` says when that pays.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
from distributed import Client

from scaleout.dask import DaskCluster

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



def _logloss(y: np.ndarray, raw: np.ndarray) -> float:
    # Binary log loss from raw log-odds, stable for large |raw|.
    return float(np.mean(np.logaddexp(0.0, raw) - y * raw))


class DaskEngine(DaskCluster):
    """The pipeline's heavy steps on a Dask cluster: features, scoring and LightGBM.

    Args:
        client: A connected Dask client (`scaleout.dask.dask_client`).
        partitions_per_worker: Lead partitions per worker for features and scoring.
        block_rounds: Boosting rounds grown between two looks at the validation loss.
    """

    def __init__(
        self, client: Client, *, partitions_per_worker: int = 2, block_rounds: int = DEFAULT_BLOCK_ROUNDS
    ) -> None:
        super().__init__(client, partitions_per_worker=partitions_per_worker)
        self.block_rounds = block_rounds

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
