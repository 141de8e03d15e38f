"""X Education, a real CRM export: the model vs the sales team's grid vs logistic regression.

    python -m benchmarks.xeducation [--data PATH/Leads.csv] [--out results.json] [--no-tune]

Everything goes through the project's own path (`examples/x-education.yaml` read by
`sources.loader`, the leakage guard, `training.static`), on the same folds for every scorer:

* two evaluations: stratified 5-fold cross-validation, and the ordered split by `Lead Number`
  (the last 20 % of leads are the test set);
* two column sets: every column, and the post-outcome columns removed (the config's
  `post_outcome` list: Tags, Lead Quality, Lead Profile, Asymmetrique *, Last Activity, Last
  Notable Activity; see docs/byo-data.md for why);
* four scorers: the model with the config's LightGBM settings (what `leadscore train` fits),
  the model tuned by nested cross-validation (settings chosen on inner folds of each outer
  training part only), the point grid of `examples/x-education-grid.yaml`, and the logistic
  regression baseline.

It also runs the leakage guard without the config's post-outcome list, to show what it flags on
its own. The export is read where it is (`../shared/datasets/x-education/Leads.csv` by
default) and never copied; only aggregate figures are printed and written.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from features.contract import StaticDataset
from features.engine import FeatureRows, lead_attribute_rows
from features.spec import FeatureSpec
from model.bundle import encode_matrix
from sources.grids import load_grid
from sources.loader import load_project_data
from training.config import LightGBMParams, ProjectConfig, TrainingConfig, load_config
from training.leakage import guard_input_for_static, run_guard, spec_without
from training.pipeline import _take
from training.static import EvaluationPlan, evaluation_plan, fit_static_booster, run_static_training

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "datasets" / "x-education" / "Leads.csv"
DEFAULT_CONFIG = PROJECT_ROOT / "examples" / "x-education.yaml"
INNER_FOLDS = 3

# Candidates the nested tuning chooses among: LightGBM settings (as in training.lightgbm) and
# columns to leave out. The project defaults first; then small trees (a few strong attributes,
# 9k rows), a slower rate, smoothing for the rare levels of Lead Source, Country and
# Specialization, time on the website as a monotone signal, and without "How did you hear about
# X Education" (78 % unanswered).
MONOTONE_TIME = ["total_time_spent_on_website"]
CANDIDATES: tuple[dict[str, Any], ...] = (
    {},
    {"learning_rate": 0.03, "num_leaves": 5, "max_depth": -1, "min_child_samples": 20, "feature_fraction": 0.7,
     "cat_smooth": 20, "min_data_per_group": 50},
    {"learning_rate": 0.03, "num_leaves": 5, "max_depth": -1, "min_child_samples": 20, "feature_fraction": 0.7,
     "cat_smooth": 20, "min_data_per_group": 50, "monotone_increasing": MONOTONE_TIME},
    {"learning_rate": 0.03, "num_leaves": 7, "max_depth": -1, "min_child_samples": 20, "feature_fraction": 0.7,
     "cat_smooth": 20, "min_data_per_group": 50, "monotone_increasing": MONOTONE_TIME},
    {"learning_rate": 0.03, "num_leaves": 6, "max_depth": -1, "min_child_samples": 20, "feature_fraction": 1.0,
     "cat_smooth": 50, "min_data_per_group": 20, "cat_l2": 30, "lambda_l2": 5, "monotone_increasing": MONOTONE_TIME},
    {"learning_rate": 0.03, "num_leaves": 7, "max_depth": -1, "min_child_samples": 20, "feature_fraction": 0.7,
     "cat_smooth": 20, "min_data_per_group": 50, "monotone_increasing": MONOTONE_TIME, "drop": ["how_heard"]},
)


def _candidate(config: TrainingConfig, spec: FeatureSpec, candidate: dict[str, Any]) -> tuple[TrainingConfig, FeatureSpec]:
    settings = {k: v for k, v in candidate.items() if k != "drop"}
    return (
        config.model_copy(update={"lightgbm": LightGBMParams(**settings)}),
        spec_without(spec, candidate.get("drop", [])),
    )


def _scored(rows: FeatureRows, y: np.ndarray, train: np.ndarray, test: np.ndarray, spec: FeatureSpec,
            config: TrainingConfig, order: np.ndarray | None = None) -> float:
    fitted = fit_static_booster(_take(rows, train), y[train], spec, config, order=None if order is None else order[train])
    raw = fitted.booster.predict(encode_matrix(_take(rows, test), spec.feature_names(), fitted.levels), raw_score=True)
    # Calibrated, as `run_static_training` scores the model (isotonic steps can tie leads).
    return float(roc_auc_score(y[test], fitted.calibration.apply(raw)))


def choose_candidate(leads: pd.DataFrame, spec: FeatureSpec, config: TrainingConfig) -> tuple[int, list[float]]:
    """The candidate with the best mean ROC AUC over stratified inner folds of these leads."""
    y = leads["converted"].to_numpy()
    folds = list(StratifiedKFold(n_splits=INNER_FOLDS, shuffle=True, random_state=config.seed + 1).split(np.zeros(len(y)), y))
    scores = []
    for candidate in CANDIDATES:
        settings, kept = _candidate(config, spec, candidate)
        rows = lead_attribute_rows(leads, kept)
        scores.append(float(np.mean([_scored(rows, y, fit, held, kept, settings) for fit, held in folds])))
    return int(np.argmax(scores)), scores


def nested_tuned_auc(data: StaticDataset, spec: FeatureSpec, config: TrainingConfig, plan: EvaluationPlan) -> dict[str, Any]:
    """The plan's outer folds, the candidate chosen on inner folds of each outer training part only."""
    leads = data.leads
    y = leads["converted"].to_numpy()
    order = leads["order"].to_numpy() if data.has_order else None
    fold_auc, chosen = [], []
    for train, test in plan.splits:
        best, _ = choose_candidate(leads.iloc[train].reset_index(drop=True), spec, config)
        settings, kept = _candidate(config, spec, CANDIDATES[best])
        fold_auc.append(_scored(lead_attribute_rows(leads, kept), y, train, test, kept, settings, order))
        chosen.append(best)
    return {"fold_roc_auc": fold_auc, "mean": float(np.mean(fold_auc)), "candidate_chosen_per_fold": chosen}


# The example config leaves this column out because the tuning chose to (candidate "drop"):
# the benchmark puts it back so that the nested tuning makes that choice inside its folds.
RECONSIDERED = {"How did you hear about X Education": "how_heard"}


def with_reconsidered_columns(config: ProjectConfig) -> ProjectConfig:
    """The config with the columns the tuning decides about declared again."""
    assert config.data is not None
    raw = config.model_dump(mode="json", exclude={"features"})
    columns = raw["data"]["columns"]
    columns["categorical"] += [c for c in RECONSIDERED if c not in columns["categorical"]]
    columns["exclude"] = [c for c in columns["exclude"] if c not in RECONSIDERED]
    columns["rename"].update(RECONSIDERED)
    return ProjectConfig.model_validate({**raw, "features": config.features.model_dump(exclude={"categorical", "numeric", "email_column"})})


def without_order(data: StaticDataset) -> StaticDataset:
    return replace(data, leads=data.leads.drop(columns=["order"]))


def run(data_path: Path, config_path: Path, tune: bool) -> dict[str, Any]:
    """Every evaluation of the benchmark, as a dict of aggregate figures."""
    example: ProjectConfig = load_config(config_path)
    if example.data is None:
        raise SystemExit(f"{config_path}: no data: section")
    config = with_reconsidered_columns(example)
    assert config.data is not None
    training = config.training.model_copy(update={"n_bootstrap": 200})
    project = load_project_data(config.data, config.features, leads_path=data_path)
    ordered = project.dataset
    assert isinstance(ordered, StaticDataset)
    unordered = without_order(ordered)
    grid = load_grid(PROJECT_ROOT / config.training.grid if not config.training.grid.is_absolute() else config.training.grid)

    # What the guard flags by itself: no post-outcome list from the config.
    alone = run_guard(guard_input_for_static(unordered, config.features, training.test_fraction), seed=training.seed)
    with_config = run_guard(
        guard_input_for_static(unordered, config.features, training.test_fraction, post_outcome=project.post_outcome),
        seed=training.seed,
    )
    removed = spec_without(config.features, with_config.excluded())
    specs = {
        "all columns": config.features,
        # What `leadscore train --config examples/x-education.yaml` trains on.
        "post-outcome removed": spec_without(removed, list(RECONSIDERED.values())),
    }
    plans = {
        "5-fold CV": (unordered, evaluation_plan(unordered, training)),
        "ordered split (Lead Number)": (ordered, evaluation_plan(ordered, training, order_name="Lead Number")),
    }
    out: dict[str, Any] = {
        "data": {"rows": len(ordered.leads), "conversions": int(ordered.leads["converted"].sum()),
                 "quarantined": ordered.report.quarantined_rows},
        "leakage_guard_alone": alone.to_dict(),
        "leakage_guard_with_config": {"flagged": with_config.flagged_columns(), "excluded": with_config.excluded()},
        "features": {name: spec.feature_names() for name, spec in specs.items()},
        "results": [],
    }
    for plan_name, (data, plan) in plans.items():
        for columns, spec in specs.items():
            started = time.perf_counter()
            result = run_static_training(data, spec, training, grid, plan)
            summary = result.summary()
            row: dict[str, Any] = {
                "evaluation": plan_name,
                "plan": plan.description,
                "columns": columns,
                "mean_fold_roc_auc": summary["mean_fold_roc_auc"],
                "fold_roc_auc": summary["fold_roc_auc"],
                "roc_auc_pooled": {k: v["roc_auc"] for k, v in result.metrics.items()},
            }
            if tune and columns == "post-outcome removed":
                row["model_nested_tuned"] = nested_tuned_auc(data, removed, training, plan)
            row["seconds"] = round(time.perf_counter() - started, 1)
            out["results"].append(row)
            print(f"  {plan_name} / {columns}: model {summary['mean_fold_roc_auc']['model']:.4f} ({row['seconds']} s)", flush=True)
    if tune:
        best, scores = choose_candidate(unordered.leads, removed, training)
        out["candidates"] = [dict(c) for c in CANDIDATES]
        out["candidate_chosen_on_all_rows"] = {"index": best, "settings": CANDIDATES[best], "inner_cv_auc": scores}
    return out


def table(out: dict[str, Any]) -> str:
    """The results as a markdown table: mean ROC AUC over folds (one fold for the ordered split)."""
    tuned = any("model_nested_tuned" in r for r in out["results"])
    head = "| evaluation | columns | model | " + ("model, nested-tuned | " if tuned else "") + "point grid | logistic regression |"
    lines = [head, "|---|---|---:|" + ("---:|" if tuned else "") + "---:|---:|"]
    for r in out["results"]:
        m = r["mean_fold_roc_auc"]
        folds = r["fold_roc_auc"]["model"]
        spread = f" ± {np.std(folds):.3f}" if len(folds) > 1 else ""
        cells = [r["evaluation"], r["columns"], f"{m['model']:.4f}{spread}"]
        if tuned:
            nt = r.get("model_nested_tuned")
            cells.append(f"{nt['mean']:.4f}" if nt else "")
        cells += [f"{m['point_grid']:.4f}", f"{m['logistic_regression']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Leads.csv of the X Education export")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the mapping (examples/x-education.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--no-tune", dest="tune", action="store_false", help="skip the nested tuning (faster)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"skipped: {args.data} not found (the X Education export is not part of the project)")
        return 0
    out = run(args.data, args.config, args.tune)
    print("\nleakage guard without the config's post-outcome list flags:", out["leakage_guard_alone"]["flagged"])
    for finding in out["leakage_guard_alone"]["findings"]:
        print(f"  {finding['column']}: {finding['check']} {finding['value']:.3f} (threshold {finding['threshold']:g})")
    print("\nROC AUC, mean over folds (± sd over the 5 folds):\n")
    print(table(out))
    if "candidate_chosen_on_all_rows" in out:
        chosen = out["candidate_chosen_on_all_rows"]
        print(f"\ncandidate the tuning chooses on all rows: {chosen['index']} {chosen['settings']}")
        print("inner-CV ROC AUC per candidate:", [round(a, 4) for a in chosen["inner_cv_auc"]])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=float))
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
