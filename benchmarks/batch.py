"""(b) Batch scoring throughput, features included, with and without reasons.

The batch path is `model.scoring.score_table` (what `leadscore score --input DATA_DIR`
runs): validated tables in, one scored row per lead out. Baseline: a bare LightGBM `predict`
of the same model on the same leads' prepared matrix, timed right after the figure. Scoring
uses the forest compiled to machine code (`model.compiled`, identical raw scores, checked
here too); the LightGBM path is measured beside it against the bare compiled predict, and the
one-time compile is a figure of its own.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmarks.measure import Section, alternated
from benchmarks.synthetic import synthetic_dataset
from features.contract import Dataset
from features.engine import snapshot_features
from model.bundle import ScoringModel
from model.compiled import CACHE_DIR_ENV, CompiledForest, CompileMode
from model.scoring import LeadIn, score_lead, score_table
from training.workflow import score_lines


def _prepared_matrix(model: ScoringModel, data: Dataset) -> np.ndarray:
    import pandas as pd

    snapshots = pd.DataFrame({"lead_id": data.leads["lead_id"].to_numpy(), "as_of": data.data_end})
    return model.encode(snapshot_features(data.leads, data.interactions, snapshots, model.spec))


def _lead_lines(data: Dataset, n: int) -> list[LeadIn]:
    # The JSON-lines path validates one LeadIn per lead; build them from the tables.
    leads = data.leads.head(n)
    events = data.interactions[data.interactions["lead_id"].isin(leads["lead_id"])]
    by_lead = {k: g for k, g in events.groupby("lead_id", sort=False)}
    out = []
    for lead in leads.itertuples(index=False):
        own = by_lead.get(lead.lead_id)
        out.append(
            LeadIn.model_validate(
                {
                    "lead_id": lead.lead_id,
                    "created_at": lead.created_at,
                    "attributes": {c: getattr(lead, c) for c in ("email", "industry", "company_size", "employee_count",
                                                                 "country", "job_role", "seniority", "source",
                                                                 "marketing_consent")},
                    "interactions": [] if own is None else [
                        {"type": t, "occurred_at": o} for t, o in zip(own["type"], own["occurred_at"], strict=True)
                    ],
                }
            )
        )
    return out


def _stages(section: Section, model: ScoringModel, data: Dataset, as_of: datetime, forest: CompiledForest, runs: int) -> None:
    """Where `score_table`'s time goes without reasons: each stage timed alone on the same leads, beside the bare compiled predict.

    The stages are the calls `score_table` makes, in its order: the features of every lead now
    and 7 and 30 days before (the trend), their encoding, the compiled forest's raw scores of the
    past instants, and the exact contributions of the rows of now that the fit and engagement
    sub-scores read (their sums also give those rows' raw scores).
    """
    import pandas as pd

    from model.scoring import past_snapshots

    stamp = pd.Timestamp(as_of)
    now = pd.DataFrame({"lead_id": data.leads["lead_id"].to_numpy(), "as_of": stamp})
    past, _positions = past_snapshots(data.leads, stamp)
    snapshots = pd.concat([now, past], ignore_index=True)
    rows = snapshot_features(data.leads, data.interactions, snapshots, model.spec)
    matrix = model.encode(rows)
    n = len(now)
    stages = {
        f"features ({len(snapshots):,} snapshots: now, 7 and 30 days before)": lambda: snapshot_features(
            data.leads, data.interactions, snapshots, model.spec),
        "encoding the feature rows": lambda: model.encode(rows),
        "compiled-forest raw scores of the past instants' snapshots": lambda: forest.raw(matrix[n:]),
        "fit and engagement sums of the rows of now (exact contributions by group)": lambda: model.fit_engagement_of(matrix[:n]),
    }
    for stage, call in stages.items():
        seconds, bare = alternated(call, lambda: forest.raw(matrix[:n]), runs)
        section.add(f"score_table stage, {n:,} leads: {stage}", "wall time", "s", seconds,
                    "bare compiled-forest predict of the leads' prepared rows", bare, runs,
                    note="what bounds batch scoring: each stage alone")


class _Quiet:
    def say(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


def run(bundle: Path, quick: bool) -> Section:
    section = Section("batch", "Batch scoring throughput (features included)", quick)
    # The process is set up as `leadscore score` sets it up: freed arrays stay for the next batch.
    from model.memory import keep_freed_memory

    section.details["keeps_freed_memory"] = keep_freed_memory()
    model = ScoringModel.load(bundle)
    n_leads, n_reasons, n_lines, runs = (3_000, 500, 200, 2) if quick else (100_000, 10_000, 10_000, 5)
    data = synthetic_dataset(n_leads, events_per_lead=20, seed=1)
    as_of = data.data_end.to_pydatetime()
    matrix = _prepared_matrix(model, data)
    base_name = "bare LightGBM predict on the prepared matrix"

    # The compiled forest (model/compiled.py): compiled once per model and machine into a
    # fresh cache, so the compile time is measured, then loaded from it by every scoring run.
    with tempfile.TemporaryDirectory(prefix="leadscore-compiled-") as cache:
        os.environ[CACHE_DIR_ENV] = cache
        start = time.perf_counter()
        forest = CompiledForest.for_booster(model.booster, compile_if_missing=True)
        compile_s = time.perf_counter() - start
        if forest is None:
            raise RuntimeError("batch benchmark: the forest did not compile (is lleaves installed?)")
        start = time.perf_counter()
        CompiledForest.for_booster(model.booster, compile_if_missing=False)
        load_s = time.perf_counter() - start
        if not np.array_equal(forest.raw(matrix), model.booster.predict(matrix, raw_score=True)):
            raise RuntimeError("batch benchmark: compiled raw scores differ from LightGBM's")

        seconds, bare = alternated(
            lambda: score_table(model, data.leads, data.interactions, as_of, compiled=CompileMode.auto),
            lambda: model.booster.predict(matrix, raw_score=True),
            runs,
        )
        section.add(f"batch score_table, {n_leads:,} leads x ~20 interactions, no reasons (compiled forest, cached)",
                    "throughput", "leads/s", n_leads / seconds, base_name, n_leads / bare, runs,
                    target=">= 150,000 leads/s", limit=150_000)  # issue 16
        _stages(section, model, data, as_of, forest, runs)
        seconds, bare_compiled = alternated(
            lambda: score_table(model, data.leads, data.interactions, as_of, compiled=CompileMode.never),
            lambda: forest.raw(matrix),
            runs,
        )
        section.add(f"batch score_table, {n_leads:,} leads, no reasons, LightGBM predict (--compiled never)",
                    "throughput", "leads/s", n_leads / seconds, "bare compiled-forest predict on the prepared matrix",
                    n_leads / bare_compiled, runs, note="for comparison: the path without the compiled forest")
        section.add("compiling the forest to machine code (once per model and machine, then cached)", "wall time",
                    "s", compile_s, "loading it from the cache", load_s, 1)

        small = Dataset(
            leads=data.leads.head(n_reasons),
            interactions=data.interactions[data.interactions["lead_id"].isin(data.leads["lead_id"].head(n_reasons))],
            quarantine=data.quarantine,
            report=data.report,
        )
        small_matrix = matrix[:n_reasons]
        seconds, bare = alternated(
            lambda: score_table(model, small.leads, small.interactions, as_of, with_reasons=True),
            lambda: model.booster.predict(small_matrix, raw_score=True),
            runs,
        )
        section.add(f"batch score_table, {n_reasons:,} leads, with top reason (exact TreeSHAP)", "throughput",
                    "leads/s", n_reasons / seconds, base_name, n_reasons / bare, runs,
                    note="the trend's past snapshots predicted by the compiled forest, cached as for the figure without reasons")
        seconds, bare = alternated(
            lambda: score_table(model, small.leads, small.interactions, as_of, with_reasons=True, top_reasons=3),
            lambda: model.booster.predict(small_matrix, raw_score=True),
            runs,
        )
        section.add(f"batch score_table, {n_reasons:,} leads, with top-3 reasons (exact TreeSHAP)", "throughput",
                    "leads/s", n_reasons / seconds, base_name, n_reasons / bare, runs,
                    target=">= 50,000 leads/s", limit=50_000,  # issue 16
                    note="top_reason, reason_2, reason_3: the labels score_lead gives its first three reasons up")
        del os.environ[CACHE_DIR_ENV]

    lines = _lead_lines(data, n_lines)
    line_matrix = matrix[:n_lines]
    seconds, bare = alternated(
        lambda: [score_lead(model, lead, as_of, with_reasons=False) for lead in lines],
        lambda: model.booster.predict(line_matrix, raw_score=True),
        runs,
    )
    section.add(f"score_lead one by one, {n_lines:,} leads, no reasons", "throughput", "leads/s",
                n_lines / seconds, base_name, n_lines / bare, runs,
                note="for comparison: the per-lead path POST /score uses")

    # `leadscore score -i leads.jsonl`: read the file, validate each line, score in chunks, write.
    with tempfile.TemporaryDirectory(prefix="leadscore-lines-") as tmp:
        source, out = Path(tmp) / "leads.jsonl", Path(tmp) / "scores.jsonl"
        source.write_text("".join(lead.model_dump_json() + "\n" for lead in lines))
        for with_reasons in (False, True):
            seconds, bare = alternated(
                lambda reasons=with_reasons: score_lines(source, out, model, as_of, reasons=reasons, language="en", console=_Quiet()),
                lambda: model.booster.predict(line_matrix, raw_score=True),
                runs,
            )
            section.add(f"leadscore score on JSON lines, {n_lines:,} leads x ~20 interactions, "
                        f"{'with reasons' if with_reasons else 'no reasons'} (file to file)", "throughput", "leads/s",
                        n_lines / seconds, base_name, n_lines / bare, runs,
                        **({"target": ">= 20,000 leads/s", "limit": 20_000} if not with_reasons else {}))
    section.details.update(n_leads=n_leads, n_interactions=len(data.interactions), model_trees=model.booster.num_trees())
    return section
