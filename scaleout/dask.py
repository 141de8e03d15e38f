"""Lead partitions on a Dask cluster: features and batch scoring, each partition computed anywhere.

The engine functions never need another lead's rows, so a partition of leads (its leads,
their interactions and their snapshots) is computed on any worker with the single-machine
code: `features.engine.snapshot_features` per partition gives exactly the single-machine
features, and `model.scoring.score_table` per partition gives exactly its scores.
`training.distributed` adds distributed LightGBM on top of the same cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

from features.engine import FeatureRows, snapshot_features
from features.spec import FeatureSpec
from model.bundle import ScoringModel
from model.compiled import CompileMode
from model.scoring import score_table


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
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
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
    part: LeadPartition, model: ScoringModel, as_of: datetime, with_reasons: bool, language: str, compiled: CompileMode,
    top_reasons: int = 1,
) -> pd.DataFrame:
    return score_table(model, part.leads, part.interactions, as_of, with_reasons=with_reasons, language=language,
                       compiled=compiled, top_reasons=top_reasons)


def _gather_rows(parts: list[LeadPartition], results: list[FeatureRows], n_rows: int) -> FeatureRows:
    first = results[0]
    categorical = {k: np.empty(n_rows, dtype=object) for k in first.categorical}
    numeric = {k: np.empty(n_rows, dtype=np.float64) for k in first.numeric}
    for part, rows in zip(parts, results, strict=True):
        for k, v in rows.categorical.items():
            categorical[k][part.positions] = v
        for k, v in rows.numeric.items():
            numeric[k][part.positions] = v
    return FeatureRows(categorical=categorical, numeric=numeric)


class DaskCluster:
    """Feature builds and batch scoring on a Dask cluster, one task per partition of leads.

    Args:
        client: A connected Dask client (`dask_client`).
        partitions_per_worker: Lead partitions per worker for features and scoring; more than
            one lets a fast worker take over from a slow one.
    """

    def __init__(
        self, client: Client, *, partitions_per_worker: int = 2
    ) -> None:
        self.client = client
        self.partitions_per_worker = partitions_per_worker

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
        top_reasons: int = 1,
    ) -> pd.DataFrame:
        """`model.scoring.score_table`, one task per partition of leads; same rows, same order.

        Each worker compiles the forest for its own CPU (`model.compiled`) when `compiled`
        asks for it, or finds it in its cache.
        """
        snapshots = pd.DataFrame({"lead_id": leads["lead_id"].to_numpy(), "as_of": pd.Timestamp(as_of)})
        parts = self._partitions(leads, interactions, snapshots)
        if not parts:
            return score_table(model, leads, interactions, as_of, with_reasons=with_reasons, language=language,
                               compiled=compiled, top_reasons=top_reasons)
        shared = self.client.scatter(model, broadcast=True)
        futures = self.client.map(
            _score_part, self.client.scatter(parts), model=shared, as_of=as_of,
            with_reasons=with_reasons, language=language, compiled=compiled, top_reasons=top_reasons, pure=False,
        )
        return pd.concat(self.client.gather(futures), ignore_index=True)
