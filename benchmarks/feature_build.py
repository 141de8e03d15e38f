"""(c) Feature building for many leads: wall time and peak memory, one process per run.

Each run is a fresh child process (`python -m benchmarks.feature_build DATA_DIR`) that reads
the synthetic tables from Parquet, builds one snapshot per lead at the data's end with
`snapshot_features`, and reports its own peak RSS: the figure is what a scoring or training
job holding those tables needs. Baseline, in the same child: one `np.sort` of the events'
int64 (lead, time) keys, the least any index-based build must do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import Section, current_rss_mb, peak_rss_mb
from benchmarks.synthetic import cached_parquet

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def measure(directory: Path) -> dict[str, float]:
    """Load the tables, build the features, time the bare sort; runs in the child."""
    import pandas as pd

    from features.engine import snapshot_features, to_epoch_seconds
    from training.config import ProjectConfig

    spec = ProjectConfig().features
    start = time.perf_counter()
    leads = pd.read_parquet(directory / "leads.parquet")
    interactions = pd.read_parquet(directory / "interactions.parquet")
    load_s = time.perf_counter() - start
    rss_loaded = current_rss_mb()
    data_end = max(leads["created_at"].max(), interactions["occurred_at"].max())
    snapshots = pd.DataFrame({"lead_id": leads["lead_id"].to_numpy(), "as_of": data_end})

    start = time.perf_counter()
    rows = snapshot_features(leads, interactions, snapshots, spec)
    features_s = time.perf_counter() - start
    peak = peak_rss_mb()

    codes = pd.Index(leads["lead_id"]).get_indexer(interactions["lead_id"]).astype(np.int64)
    keys = (codes << 34) + to_epoch_seconds(interactions["occurred_at"])
    rng = np.random.default_rng(0)
    keys = keys[rng.permutation(keys.size)]
    start = time.perf_counter()
    np.sort(keys)
    sort_s = time.perf_counter() - start
    return {
        "n_leads": len(leads),
        "n_interactions": len(interactions),
        "n_features": len(rows.categorical) + len(rows.numeric),
        "load_s": load_s,
        "features_s": features_s,
        "sort_baseline_s": sort_s,
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": peak,
    }


def _run_child(directory: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.feature_build", str(directory)],
        check=True, capture_output=True, text=True, cwd=PROJECT_ROOT,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool, runs: int | None = None) -> Section:
    section = Section("feature_build", "Feature building (one snapshot per lead)", quick)
    sizes = (2_000, 10_000) if quick else (100_000, 1_000_000)
    runs = runs or (1 if quick else 3)
    for n_leads in sizes:
        directory = cached_parquet(n_leads, seed=0)
        results = [_run_child(directory) for _ in range(runs)]
        med = {k: float(np.median([r[k] for r in results])) for k in results[0]}
        label = f"feature build, {n_leads:,} leads / {med['n_interactions'] / 1e6:.1f}M interactions"
        big = n_leads >= 1_000_000
        section.add(label, "wall time", "s", med["features_s"], "np.sort of the events' int64 keys",
                    med["sort_baseline_s"], runs,
                    **({"target": "<= 120 s", "limit": 120.0} if big else {}))
        section.add(label, "peak RSS", "MB", med["peak_rss_mb"], "RSS with the tables loaded, before features",
                    med["rss_after_load_mb"], runs,
                    **({"target": "<= 8 GB", "limit": 8192.0} if big else {}),
                    note="whole process: tables + features")
        section.details[str(n_leads)] = results
    return section


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]))))
