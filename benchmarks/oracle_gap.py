"""The oracle gap: how far the model is from the simulator's oracle, and how much of that more leads would close.

    python -m benchmarks.oracle_gap --leads 20000 --seed 7 --more 100000 [--bootstrap 200] [--out gap.json] [--config FILE]

Trains the model as `leadscore train` does on `--leads` simulated leads (`run_training` with
the default config, model selection included) and prints its test-period ROC AUC beside the
oracle's (the simulator's exact P(convert within the horizon)) on the same rows, with the paired
95 % bootstrap interval of oracle - model (resampling leads), overall and by snapshot offset.

Then `--more` leads are simulated with another seed (the same funnel, a bigger sample of it), a
LightGBM with the same settings is fit on all their matured snapshots (its trees early-stopped on
an eighth of those leads, held out) and scored on the same test rows. The gap left at that size
is what these features leave to the oracle (its hidden fit, the future re-engagements and churn
it knows); the difference between the two gaps is what more leads of the same funnel would close.

The present oracle (`simulator.funnel.present_conversion_probability`) knows every latent of the
present but draws the future (a re-engagement or a churn that has not begun by the snapshot)
from the simulator's own distributions: oracle - present oracle is out of reach of any model,
present oracle - model is what the features and the fit leave.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _bigger_sample_scores(n_leads: int, seed: int, config: Any, test_rows: Any, levels: dict[str, list[str]]) -> tuple[np.ndarray, int, int]:
    """Raw scores on `test_rows` of LightGBM fit on every matured snapshot of `n_leads` other leads; (scores, trees, snapshots)."""
    from benchmarks.bench_model import simulated_with_oracle
    from features.engine import snapshot_features
    from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
    from model.bundle import encode_matrix
    from training.pipeline import fit_lightgbm, lightgbm_params

    spec, training = config.features, config.training
    data, _oracle = simulated_with_oracle(n_leads, seed, spec)
    snaps = snapshot_times(data.leads, training.snapshot_offsets_days, matured_label_cutoff(data.data_end, training.horizon_days))
    snaps["label"] = conversion_labels(snaps, data.leads, training.horizon_days)
    names = spec.feature_names()
    # The test period's category levels: codes mean the same in both matrices.
    matrix = encode_matrix(snapshot_features(data.leads, data.interactions, snaps, spec), names, levels)
    y = snaps["label"].to_numpy()
    rng = np.random.default_rng(seed)
    leads = snaps["lead_id"].unique()
    held_out = snaps["lead_id"].isin(rng.choice(leads, len(leads) // 8, replace=False)).to_numpy()
    booster = fit_lightgbm(
        lightgbm_params(training, names),
        (matrix[~held_out], y[~held_out]),
        (matrix[held_out], y[held_out]),
        feature_names=names,
        categorical=[names.index(c) for c in spec.categorical_features()],
        max_rounds=training.lightgbm.max_rounds * 3,
        early_stopping_rounds=training.lightgbm.early_stopping_rounds,
    )
    return np.asarray(booster.predict(test_rows, raw_score=True)), booster.current_iteration(), len(y)


def run(n_leads: int, seed: int, more: int, n_bootstrap: int, config_file: Path | None = None) -> dict[str, Any]:
    """Train on `n_leads`, measure against the oracle; then the same settings fit on `more` leads; the figures.

    Args:
        config_file: A `leadscore.yaml` whose features and training settings are measured (its
            `training.n_bootstrap` is replaced by `n_bootstrap`); None: the defaults.
    """
    from sklearn.metrics import roc_auc_score

    from benchmarks.bench_model import simulated_with_oracles
    from sources.grids import load_grid
    from training.config import ProjectConfig, load_config
    from training.hazard import paired_auc_difference
    from training.pipeline import run_training

    config = ProjectConfig() if config_file is None else load_config(config_file)
    config.training.n_bootstrap = n_bootstrap
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    data, oracle, present = simulated_with_oracles(n_leads, seed, config.features)
    result = run_training(data, config.features, config.training, load_grid(config.training.grid), oracle,
                          selection=config.training.selection)  # fmt: skip
    seconds["train"] = time.perf_counter() - clock
    test = result.test
    y, groups, offsets = test.y, test.snapshots["lead_id"].to_numpy(), test.snapshots["offset_days"].to_numpy()
    model, truth_p = test.scores["model"], test.scores["oracle"]

    def gap(score: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float]:
        keep = slice(None) if rows is None else rows
        return paired_auc_difference(y[keep], truth_p[keep], score[keep], groups[keep], n_bootstrap=n_bootstrap, seed=config.training.seed)

    present_p = present(test.snapshots, config.training.horizon_days)
    seconds["present_oracle"] = time.perf_counter() - clock - seconds["train"]
    figures: dict[str, Any] = {
        "n_leads": n_leads,
        "seed": seed,
        "config": None if config_file is None else str(config_file),
        "chosen": result.candidate.name if result.candidate else "lightgbm",
        "test_rows": len(y),
        "roc_auc": {name: result.metrics[name]["roc_auc"] for name in ("model", "oracle", "logistic_regression")},
        "oracle_minus_model": gap(model),
        # What no model can close (the future the full oracle knows), and what the features leave.
        "present_oracle_roc_auc": float(roc_auc_score(y, present_p)),
        "oracle_minus_present_oracle": gap(present_p),
        "present_oracle_minus_model": paired_auc_difference(y, present_p, model, groups, n_bootstrap=n_bootstrap, seed=config.training.seed),
        "by_offset": {
            f"{offset:g}": {
                "rows": int((offsets == offset).sum()),
                "oracle_minus_model": gap(model, offsets == offset),
                "oracle_minus_present_oracle": gap(present_p, offsets == offset),
            }
            for offset in np.unique(offsets)
        },
    }
    if more:
        clock = time.perf_counter()
        levels = result.model.meta.categorical_levels
        raw, trees, n_snapshots = _bigger_sample_scores(more, seed + 1, config, test.matrix, levels)
        seconds["more_leads"] = time.perf_counter() - clock
        figures["more_leads"] = {
            "n_leads": more,
            "seed": seed + 1,
            "snapshots": n_snapshots,
            "trees": trees,
            "oracle_minus_model": gap(raw),
            "gain": paired_auc_difference(y, raw, model, groups, n_bootstrap=n_bootstrap, seed=config.training.seed),
        }
    figures["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return figures


def _interval(d: dict[str, float]) -> str:
    return f"{d['value']:.4f} [{d['ci_low']:.4f}, {d['ci_high']:.4f}]"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=20_000, help="Simulated leads the model is trained and measured on")
    parser.add_argument("--seed", type=int, default=7, help="Simulation seed")
    parser.add_argument("--more", type=int, default=100_000, help="Leads of the bigger sample (0: skip it)")
    parser.add_argument("--bootstrap", type=int, default=200, help="Bootstrap resamples (by lead)")
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON here")
    parser.add_argument("--config", type=Path, default=None,
                        help="A leadscore.yaml whose features and training settings to measure (default: the defaults, "
                             "not ./leadscore.yaml)")  # fmt: skip
    args = parser.parse_args(argv)
    figures = run(args.leads, args.seed, args.more, args.bootstrap, args.config)
    auc = figures["roc_auc"]
    print(f"{figures['n_leads']:,} simulated leads (seed {figures['seed']}), chosen: {figures['chosen']}; "
          f"{figures['test_rows']:,} test snapshots")  # fmt: skip
    print(f"test ROC AUC: model {auc['model']['value']:.4f}, oracle {auc['oracle']['value']:.4f}, "
          f"logistic regression {auc['logistic_regression']['value']:.4f}")  # fmt: skip
    print(f"oracle - model: {_interval(figures['oracle_minus_model'])}")
    print(f"present oracle (knows every latent of the present, not the future): ROC AUC {figures['present_oracle_roc_auc']:.4f}; "
          f"oracle - present oracle {_interval(figures['oracle_minus_present_oracle'])} (out of any model's reach); "
          f"present oracle - model {_interval(figures['present_oracle_minus_model'])}")  # fmt: skip
    for offset, entry in figures["by_offset"].items():
        print(f"  offset {offset:>3} days ({entry['rows']:,} rows): oracle - model {_interval(entry['oracle_minus_model'])}, "
              f"oracle - present oracle {_interval(entry['oracle_minus_present_oracle'])}")  # fmt: skip
    if "more_leads" in figures:
        more = figures["more_leads"]
        print(f"same settings fit on {more['n_leads']:,} other leads (seed {more['seed']}, {more['snapshots']:,} snapshots, "
              f"{more['trees']} trees): oracle - model {_interval(more['oracle_minus_model'])}; "
              f"gain over the {figures['n_leads']:,}-lead model {_interval(more['gain'])}")  # fmt: skip
    print(f"seconds: {figures['seconds']}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
