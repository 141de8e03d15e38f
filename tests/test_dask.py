"""Scale-out on Dask: same features, same scores, a model as good as the single-machine one."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from features.engine import snapshot_features
from training.config import ProjectConfig

distributed = pytest.importorskip("distributed")

from scaleout.dask import partition_by_lead  # noqa: E402
from training.distributed import DaskEngine  # noqa: E402

pytestmark = pytest.mark.slow

GRID = "default"  # the built-in grid


@pytest.fixture(scope="module")
def engine() -> Iterator[DaskEngine]:
    # Worker processes: distributed LightGBM opens one network per process.
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        yield DaskEngine(client)


def _snapshots(leads: pd.DataFrame, days: tuple[int, ...] = (0, 20, 75)) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "lead_id": np.repeat(leads["lead_id"].to_numpy(), len(days)),
            "as_of": np.concatenate(
                [(leads["created_at"] + pd.Timedelta(days=d)).to_numpy()[:, None] for d in days], axis=1
            ).ravel(),
        }
    )
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    # Shuffled: the partitions must give every snapshot back at its own row.
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_partitions_keep_each_lead_whole(simulated_dataset) -> None:
    data = simulated_dataset
    snaps = _snapshots(data.leads.head(500))
    parts = partition_by_lead(data.leads, data.interactions, snaps, 4)
    assert len(parts) == 4
    positions = np.concatenate([p.positions for p in parts])
    assert np.array_equal(np.sort(positions), np.arange(len(snaps)))
    seen: set[str] = set()
    for part in parts:
        ids = set(part.leads["lead_id"])
        assert not ids & seen
        seen |= ids
        assert set(part.interactions["lead_id"]) <= ids
        assert set(part.snapshots["lead_id"]) <= ids
        mine = data.interactions["lead_id"].isin(ids)
        assert len(part.interactions) == int(mine.sum())  # all of the leads' interactions


@pytest.mark.parametrize("n_partitions", [1, 3, 50])
def test_partitioning_rejects_unknown_snapshot_leads(simulated_dataset, n_partitions: int) -> None:
    snaps = pd.DataFrame({"lead_id": ["nope"], "as_of": [pd.Timestamp("2024-05-01", tz="UTC")]})
    with pytest.raises(ValueError, match="unknown lead_id"):
        partition_by_lead(simulated_dataset.leads, simulated_dataset.interactions, snaps, n_partitions)


def test_dask_features_equal_single_machine(engine: DaskEngine, simulated_dataset) -> None:
    data, spec = simulated_dataset, ProjectConfig().features
    snaps = _snapshots(data.leads)
    local = snapshot_features(data.leads, data.interactions, snaps, spec).to_frame(spec)
    on_dask = engine.snapshot_features(data.leads, data.interactions, snaps, spec).to_frame(spec)
    pd.testing.assert_frame_equal(on_dask, local, check_exact=True)


def test_dask_batch_scores_equal_single_machine(engine: DaskEngine, training_result, simulated_dataset) -> None:
    from model.scoring import score_table

    data, model = simulated_dataset, training_result.model
    as_of = data.data_end.to_pydatetime()
    local = score_table(model, data.leads, data.interactions, as_of)
    on_dask = engine.score_table(model, data.leads, data.interactions, as_of)
    pd.testing.assert_frame_equal(on_dask, local, check_exact=True)


def test_dask_training_matches_single_machine_auc(engine: DaskEngine, training_result, simulated_dataset) -> None:
    from sources.grids import load_grid
    from training.pipeline import run_training

    config = ProjectConfig()
    config.training.n_bootstrap = 0
    result = run_training(
        simulated_dataset, config.features, config.training, load_grid(GRID),
        build_features=engine.snapshot_features, fit_booster=engine.fit_booster,
    )
    local_auc = training_result.metrics["model"]["roc_auc"]["value"]
    dask_auc = result.metrics["model"]["roc_auc"]["value"]
    assert abs(dask_auc - local_auc) <= 0.02
    # Early stopping happened: the model kept fewer trees than the rounds allowed.
    assert 1 <= result.model.booster.num_trees() < config.training.lightgbm.max_rounds
    assert result.split == training_result.split
