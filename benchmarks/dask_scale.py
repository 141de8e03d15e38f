"""Scale-out: the feature build and batch scoring on a Dask LocalCluster vs one process.

On one machine a LocalCluster can only show the overhead of partitioning and shipping data
(and, with idle cores, the parallel gain); on a real cluster the workers add cores and memory.
Baseline: the same call in this process (single-machine engine), timed alternately with it.
Cluster start-up is not timed.
"""

from __future__ import annotations

import pandas as pd

from benchmarks.measure import Section, alternated
from benchmarks.synthetic import synthetic_dataset
from features.engine import snapshot_features
from model.bundle import ScoringModel
from model.scoring import score_table
from scaleout.dask import dask_client
from training.config import ProjectConfig
from training.distributed import DaskEngine


def run(bundle, quick: bool) -> Section:
    section = Section("dask", "Scale-out on a Dask LocalCluster (2 worker processes) vs one process", quick)
    n_leads, runs = (3_000, 1) if quick else (200_000, 3)
    data = synthetic_dataset(n_leads, seed=3)
    spec = ProjectConfig().features
    snapshots = pd.DataFrame({"lead_id": data.leads["lead_id"].to_numpy(), "as_of": data.data_end})
    model = ScoringModel.load(bundle)
    as_of = data.data_end.to_pydatetime()
    with dask_client(None, n_workers=2) as client:
        engine = DaskEngine(client)
        dask_s, local_s = alternated(
            lambda: engine.snapshot_features(data.leads, data.interactions, snapshots, spec),
            lambda: snapshot_features(data.leads, data.interactions, snapshots, spec),
            runs,
        )
        section.add(f"feature build on Dask, {n_leads:,} leads", "wall time", "s", dask_s,
                    "snapshot_features in one process", local_s, runs)
        dask_s, local_s = alternated(
            lambda: engine.score_table(model, data.leads, data.interactions, as_of),
            lambda: score_table(model, data.leads, data.interactions, as_of),
            runs,
        )
        section.add(f"batch scoring on Dask, {n_leads:,} leads, no reasons", "throughput", "leads/s",
                    n_leads / dask_s, "score_table in one process", n_leads / local_s, runs)
    section.details.update(n_leads=n_leads, n_interactions=len(data.interactions))
    return section
