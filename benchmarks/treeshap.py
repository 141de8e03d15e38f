"""Exact reasons at prediction cost: the TreeSHAP tables (`model.treeshap`) against a prediction.

Per-row cost of exact TreeSHAP contributions from the per-tree tables, beside the bare
predictions of the same forest in the same run, interleaved call by call: LightGBM's `predict`
(raw scores) and the compiled forest (`model.compiled`, lleaves). Everything runs on one thread
(the bundle's rule below 2,000 rows), in batches of `BATCH_ROWS` rows (the target: at most 1.5x a
prediction per row), on one row and on three (a lead scored now, 7 and 30 days ago: the one-lead
serving call). LightGBM's
`pred_contrib`, which the tables replace, is measured beside them. The contributions are
checked equal to `pred_contrib` (largest absolute difference in `details`).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.batch import _prepared_matrix
from benchmarks.measure import Section, interleaved
from benchmarks.synthetic import synthetic_dataset
from model.bundle import ScoringModel
from model.compiled import CACHE_DIR_ENV, CompiledForest
from model.treeshap import ExactContributions

BATCH_ROWS = 1_000
TARGET_RATIO = 1.5


def run(bundle: Path, quick: bool) -> Section:
    section = Section("treeshap", "Exact reasons at prediction cost: TreeSHAP tables vs a prediction", quick)
    model = ScoringModel.load(bundle)
    booster = model.booster
    n_leads, calls, one_row_calls = (2_000, 20, 200) if quick else (20_000, 200, 3_000)
    data = synthetic_dataset(n_leads, events_per_lead=20, seed=1)
    matrix = _prepared_matrix(model, data)
    start = time.perf_counter()
    exact = ExactContributions.from_booster(booster)
    build_s = time.perf_counter() - start
    worst = float(np.max(np.abs(exact.contributions(matrix) - booster.predict(matrix, pred_contrib=True))))
    if worst > 1e-9:
        raise RuntimeError(f"treeshap benchmark: tables differ from pred_contrib by {worst:.3g}")

    with tempfile.TemporaryDirectory(prefix="leadscore-compiled-") as cache:
        os.environ[CACHE_DIR_ENV] = cache
        forest = CompiledForest.for_booster(booster, compile_if_missing=True)
        if forest is None:
            raise RuntimeError("treeshap benchmark: the forest did not compile (is lleaves installed?)")
        batch, row, three = matrix[:BATCH_ROWS].copy(), matrix[:1].copy(), matrix[:3].copy()
        # The target is the batch's per-row cost; one and three rows are shown beside it (fixed costs of a call dominate).
        for rows, n_calls, label, targeted in (
            (batch, calls, f"batch of {len(batch):,} rows, per row", True),
            (row, one_row_calls, "one row", False),
            (three, one_row_calls, "three rows (one lead's serving call), per row", False),
        ):
            times = interleaved(
                {
                    "exact": lambda rows=rows: exact.contributions(rows),
                    "predict": lambda rows=rows: booster.predict(rows, raw_score=True, num_threads=1),
                    "compiled": lambda rows=rows: forest.raw(rows),
                    "pred_contrib": lambda rows=rows: booster.predict(rows, pred_contrib=True, num_threads=1),
                },
                n_calls,
            )
            per_row = {name: float(np.median(t)) * 1e3 / len(rows) for name, t in times.items()}  # microseconds
            for baseline, baseline_name in (
                ("predict", "bare LightGBM predict (raw score), same rows, 1 thread"),
                ("compiled", "bare compiled-forest predict (lleaves), same rows, 1 thread"),
            ):
                section.add(
                    f"exact TreeSHAP from tables, {label}", "p50 per row", "µs", per_row["exact"], baseline_name,
                    per_row[baseline], n_calls, target=f"<= {TARGET_RATIO:g}x a prediction" if targeted else "",
                    limit=TARGET_RATIO * per_row[baseline] if targeted else None,
                )
            section.add(
                f"LightGBM pred_contrib (what the tables replace), {label}", "p50 per row", "µs", per_row["pred_contrib"],
                "bare LightGBM predict (raw score), same rows, 1 thread", per_row["predict"], n_calls,
            )
    section.details.update(
        trees=exact.n_trees, tabulated_trees=exact.tabulated, table_build_s=build_s, max_abs_diff_vs_pred_contrib=worst,
        rows_checked=len(matrix), batch_rows=BATCH_ROWS,
    )
    return section
