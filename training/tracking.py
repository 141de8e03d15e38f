"""MLflow for training runs: parameters, data fingerprint, metrics, plots, bundle, registry.

The `champion` alias moves only when the promotion gate (`training.gate`) lets the new model
through on its test rows: above chance, not below the baselines, not below the current and the
best champion, both re-scored on those rows with their own feature spec.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.contract import Dataset, StaticDataset
from features.engine import lead_attribute_rows, snapshot_features
from model.bundle import REPORT_FILE, ScoringModel
from model.registry import (
    BUNDLE_ARTIFACT,
    PREVIOUS_CHAMPION_TAG,
    RegistryConfig,
    champion_version,
    download_version,
    mlflow_client,
    set_champion,
)
from training import plots
from training.config import ProjectConfig
from training.gate import BEST_CHAMPION_TAG, FORCED_TAG, ChampionOnRows, GateDecision, gate_decision, gate_evidence
from training.hazard import flat_metrics as hazard_flat_metrics
from training.leakage import LeakageReport
from training.pipeline import TrainingResult
from training.report import Explanations, explain, inputs_from_training, write_bundle_files
from training.static import StaticTrainingResult

if TYPE_CHECKING:  # mlflow is imported where it is used: it is slow to import
    from mlflow import ActiveRun, MlflowClient


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    model_version: str
    promoted: bool
    decision: str
    champion_auc_same_test: float | None


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def experiment_id(registry: RegistryConfig) -> str:
    """The experiment's id, created with the configured artifact location when new."""
    client = mlflow_client(registry)
    existing = client.get_experiment_by_name(registry.experiment)
    if existing is not None:
        return existing.experiment_id
    location = registry.artifact_location
    if "://" not in location:
        location = Path(location).resolve().as_uri()
    return client.create_experiment(registry.experiment, artifact_location=location)


MIN_UNSEEN_ROWS = 100
MIN_UNSEEN_CONVERSIONS = 10


def _on_unseen_rows(
    champion: ScoringModel, p_champion: np.ndarray, p_model: np.ndarray, y: np.ndarray, unseen: np.ndarray, what: str
) -> tuple[float, float | None, str]:
    """Both models' ROC AUC on the rows the champion never saw; refused when too few."""
    version = champion.meta.model_version
    if unseen.all():
        return float(roc_auc_score(y, p_champion)), None, ""
    n, conversions = int(unseen.sum()), int(y[unseen].sum())
    if n < MIN_UNSEEN_ROWS or conversions < MIN_UNSEEN_CONVERSIONS or conversions == n:
        raise ChampionNotComparable(
            f"champion {version} learned from all but {n} of these test rows ({conversions} conversions; "
            f"need {MIN_UNSEEN_ROWS} and {MIN_UNSEEN_CONVERSIONS}): train again when newer leads have matured, or --force"
        )
    return float(roc_auc_score(y[unseen], p_champion[unseen])), float(roc_auc_score(y[unseen], p_model[unseen])), f"{n} test rows of {what}"


def champion_auc_on_test(data: Dataset, result: TrainingResult, champion: ScoringModel) -> ChampionOnRows:
    """A registered model on the new run's test snapshots (features by its own spec) it never saw.

    A served champion (`training.served` in its bundle) learned from labels up to its data
    end: it is scored on the test snapshots of leads created after that, and so is the new model.
    """
    if not champion.spec.interactions:
        raise ChampionNotComparable(
            f"champion {champion.meta.model_version} was trained on a static export; it cannot be scored on "
            "snapshots of leads with interactions (use another registry.model_name, or --force)"
        )
    snaps = result.test.snapshots
    rows = snapshot_features(data.leads, data.interactions, snaps, champion.spec)
    p = champion.probability(champion.encode(rows))
    served = champion.meta.training.get("served") or {}
    unseen: np.ndarray[tuple[int, ...], np.dtype[np.bool_]] = np.ones(len(snaps), dtype=bool)
    what = ""
    if "labels_through" in served:
        created = pd.DatetimeIndex(data.leads.set_index("lead_id")["created_at"].reindex(snaps["lead_id"]))
        unseen = np.asarray(created > pd.Timestamp(served["labels_through"]))
        what = f"leads created after {served['labels_through'][:10]}"
    auc, mine, rows_text = _on_unseen_rows(champion, p, result.test.scores["model"], result.test.y, unseen, what)
    return ChampionOnRows("", auc, challenger_auc=mine, rows=rows_text)


def champion_auc_on_static_rows(data: StaticDataset, result: StaticTrainingResult, champion: ScoringModel) -> ChampionOnRows:
    """A registered model on the static run's evaluation rows (test part or every row) it never saw."""
    if champion.spec.interactions:
        raise ChampionNotComparable(
            f"champion {champion.meta.model_version} was trained on leads with interactions; it cannot be scored "
            "on the rows of a static export (use another registry.model_name, or --force)"
        )
    evaluated = np.concatenate([test for _, test in result.plan.splits])
    missing = [c for c in champion.spec.feature_names() if c not in data.leads.columns]
    if missing:
        raise ChampionNotComparable(
            f"champion {champion.meta.model_version} reads {missing}, which this export lacks: it cannot be "
            "scored on the same rows (use another registry.model_name, or --force)"
        )
    leads = data.leads.iloc[evaluated].reset_index(drop=True)
    p = champion.probability(champion.encode(lead_attribute_rows(leads, champion.spec)))
    served = champion.meta.training.get("served") or {}
    unseen = np.ones(len(leads), dtype=bool)
    what = ""
    if "trained_through_order" in served and "order" in leads:
        unseen = leads["order"].to_numpy(dtype=np.float64) > float(served["trained_through_order"])
        what = f"leads after order {served['trained_through_order']:g}"
    auc, mine, rows_text = _on_unseen_rows(champion, p, result.scores["model"], result.y, unseen, what)
    return ChampionOnRows("", auc, challenger_auc=mine, rows=rows_text)


class ChampionNotComparable(ValueError):
    """The champion cannot be scored on the new model's test rows; the message says why."""


def _log_model_and_metrics(
    config: ProjectConfig, model: ScoringModel, metrics: dict[str, Any], tags: dict[str, str] | None = None
) -> None:
    """Log a model's parameters, data fingerprint and metrics into the active MLflow run.

    Both kinds of run (snapshots, static export) record them under the same names, so that
    runs of either kind compare in the MLflow UI.

    Args:
        config: Project config; its training settings are logged flat (`lightgbm.num_leaves`, ...).
        model: The trained model: feature count, best iteration, data fingerprint, version.
        metrics: Scorer -> metric -> `value`, `ci_low`, `ci_high`.
        tags: More run tags, beside `model_version` and `data.content_hash`.
    """
    import mlflow

    mlflow.log_params(_flat("", config.training.model_dump(mode="json"), {}))
    mlflow.log_params({"features.n": len(model.feature_names), "best_iteration": model.meta.training["best_iteration"]})
    fingerprint = model.meta.training["data"]
    mlflow.log_params({f"data.{k}": v for k, v in fingerprint.items()})
    mlflow.set_tags(
        {"model_version": model.meta.model_version, "data.content_hash": fingerprint["content_hash"], **(tags or {})}
    )
    for scorer, scorer_metrics in metrics.items():
        for metric, stats in scorer_metrics.items():
            mlflow.log_metric(f"{scorer}.{metric}", stats["value"])
            mlflow.log_metric(f"{scorer}.{metric}.ci_low", stats["ci_low"])
            mlflow.log_metric(f"{scorer}.{metric}.ci_high", stats["ci_high"])


def _log_plots(
    model: ScoringModel,
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    calibration_scores: dict[str, np.ndarray],
    plot_dir: Path,
) -> None:
    """Draw the ROC, gains, calibration and importance plots into `plot_dir`; log them as `plots`.

    Args:
        model: The trained model (its gain importance is drawn).
        y: Outcomes (0/1) of the evaluation rows.
        scores: Scorer -> scores of those rows, for the ROC and gains plots.
        calibration_scores: The scorers the calibration plot shows.
        plot_dir: A folder for the image files (created).
    """
    import mlflow

    plots.plot_roc(y, scores, plot_dir / "roc.png")
    plots.plot_gains(y, scores, plot_dir / "gains_vs_grid.png")
    plots.plot_calibration(y, calibration_scores, plot_dir / "calibration.png")
    plots.plot_importance(model.feature_names, model.booster.feature_importance("gain"), plot_dir / "importance.png")
    mlflow.log_artifacts(str(plot_dir), "plots")


def best_champion_version(client: MlflowClient, registry: RegistryConfig, champion: str | None) -> str | None:
    """The version whose promotion set the bar (registered-model tag), else the current champion."""
    if champion is None:
        return None
    return client.get_registered_model(registry.model_name).tags.get(BEST_CHAMPION_TAG) or champion


def rivals_on_rows(
    registry: RegistryConfig, client: MlflowClient, score: Callable[[ScoringModel], ChampionOnRows]
) -> tuple[ChampionOnRows | None, ChampionOnRows | None]:
    """The current champion and the best champion so far, each re-scored by `score` on the new rows.

    Raises:
        model.registry.RegistryError: The registry could not be read (never taken as "no champion").
    """
    champion = champion_version(registry)
    if champion is None:
        return None, None
    best = best_champion_version(client, registry, champion) or champion
    scored: dict[str, ChampionOnRows] = {}
    for version in {champion, best}:
        with tempfile.TemporaryDirectory() as tmp:
            rival = ScoringModel.load(download_version(registry, version, Path(tmp)))
        try:
            scored[version] = dataclasses.replace(score(rival), version=version)
        except ChampionNotComparable as why:
            scored[version] = ChampionOnRows(version, float("nan"), str(why))
    return scored[champion], (scored[best] if best != champion else None)


def _register_and_decide(
    registry: RegistryConfig,
    client: MlflowClient,
    run: ActiveRun,
    model: ScoringModel,
    decision_: GateDecision,
    previous: str | None,
    tags: dict[str, str] | None = None,
) -> tuple[str, bool, str]:
    """Register the run's bundle as a new version and move `champion` to it if the gate let it through.

    The outcome is tagged on the active run (`registry.version`, `registry.promoted`,
    `registry.decision`, `registry.forced`), so that a run says what became of its model; a
    promotion that raised the bar moves the registered model's `best_champion_version` tag.

    Args:
        registry: Registry settings (model name).
        client: The MlflowClient of the registry.
        run: The active MLflow run, whose `bundle` artifact the version points to.
        model: The trained model (its `model_version` tags the registry version).
        decision_: The promotion gate's decision.
        previous: The current champion's registry version, None when there is none.
        tags: More run tags to set with the outcome.

    Returns:
        The new registry version, whether it was promoted, and the decision in words.
    """
    import mlflow

    if registry.model_name not in {m.name for m in client.search_registered_models()}:
        client.create_registered_model(registry.model_name, description="leadscore conversion model bundles")
    version = client.create_model_version(
        registry.model_name,
        source=f"{run.info.artifact_uri}/{BUNDLE_ARTIFACT}",
        run_id=run.info.run_id,
        tags={"model_version": model.meta.model_version},
    ).version
    promoted = decision_.promote
    decision = f"version {version}: {decision_.reason}" + (f" (champion was v{previous})" if previous and promoted else "")
    if promoted:
        if previous:
            client.set_model_version_tag(registry.model_name, str(version), PREVIOUS_CHAMPION_TAG, previous)
        set_champion(registry, str(version))
        if decision_.raises_bar:
            client.set_registered_model_tag(registry.model_name, BEST_CHAMPION_TAG, str(version))
    mlflow.set_tags({
        "registry.version": str(version), "registry.promoted": str(promoted), "registry.decision": decision,
        FORCED_TAG: str(decision_.forced), **(tags or {}),
    })  # fmt: skip
    return version, promoted, decision


def _log_windows(model: ScoringModel) -> None:
    """Tag the run with the rows that measured the method and those the served model learned from."""
    import mlflow

    from training.selection import dates_sentence

    training = model.meta.training
    tags = {f"measured_on.{k}": str(v) for k, v in (training.get("measured_on") or {}).items()}
    tags.update({f"served.{k}": str(v) for k, v in (training.get("served") or {}).items()})
    sentence = dates_sentence(training)
    if sentence:
        tags["windows"] = sentence
    if "selection" in training:
        tags["selection.chosen"] = str(training["selection"]["chosen"])
        mlflow.log_dict(training["selection"], "selection.json")
    mlflow.set_tags(tags)


def _log_rivals(champion: ChampionOnRows | None, best: ChampionOnRows | None) -> None:
    import mlflow

    if champion is not None:
        mlflow.log_metric("champion.roc_auc_same_test", champion.roc_auc)
    if best is not None:
        mlflow.log_metric("best_champion.roc_auc_same_test", best.roc_auc)


def log_training_run(
    result: TrainingResult,
    data: Dataset,
    config: ProjectConfig,
    run_name: str | None = None,
    extra_artifacts: dict[str, Path] | None = None,
    tolerance: float = 0.0,
    force: bool = False,
    explanations: Explanations | None = None,
    leakage: LeakageReport | None = None,
) -> RunRecord:
    """Record a training run in MLflow, register its bundle, and move `champion` if the gate lets it.

    Args:
        result: The training result.
        data: The data it was trained on (the champion is re-scored on its test snapshots).
        config: Project config (registry settings).
        run_name: MLflow run name.
        extra_artifacts: More files to log, artifact folder -> path.
        tolerance: ROC AUC the new model may lose to the current and the best champion and
            still be promoted (0: it must be strictly better, as for `leadscore train`).
        force: Promote even when the gate refuses (tagged `registry.forced`).
        explanations: The leadership report, drivers and learned grid logged with the bundle
            (`training.report.write_bundle_files`); computed here when not given.
        leakage: The leakage guard's report, logged as `leakage.json` and `leakage.*` tags.
    """
    import mlflow

    registry = config.registry
    client = mlflow_client(registry)
    exp_id = experiment_id(registry)
    model = result.model
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        _log_model_and_metrics(config, model, result.metrics)
        if model.hazard is not None:  # the hazard's test-period figures (`training.hazard`)
            mlflow.log_metrics(hazard_flat_metrics(model.hazard.settings.metrics))
            mlflow.log_param("hazard.trees", model.hazard.settings.trees)
        for step, seconds in result.timings.items():
            mlflow.log_metric(f"seconds.{step}", seconds)
        mlflow.log_dict(result.metrics, "metrics.json")
        mlflow.log_dict(result.split, "split.json")
        mlflow.log_dict(data.report.to_dict(), "validation_report.json")
        if leakage is not None:
            log_leakage(leakage)

        y, scores = result.test.y, result.test.scores
        _log_plots(model, y, scores, {k: v for k, v in scores.items() if k != "oracle"}, tmp_path / "plots")
        for name, path in (extra_artifacts or {}).items():
            mlflow.log_artifact(str(path), name)

        bundle_dir = model.save(tmp_path / BUNDLE_ARTIFACT)
        explanations = explanations or explain(inputs_from_training(result))
        write_bundle_files(explanations, bundle_dir)
        mlflow.log_artifact(str(bundle_dir / REPORT_FILE))
        mlflow.log_metric("learned_grid.roc_auc", explanations.roc_auc["learned_grid"])
        mlflow.log_artifacts(str(bundle_dir), BUNDLE_ARTIFACT)

        rescore = lambda rival: champion_auc_on_test(data, result, rival)  # noqa: E731
        return _gate_and_register(registry, client, run, exp_id, model, result.metrics, rescore, config, tolerance, force)


def write_metrics_json(result: TrainingResult, path: Path) -> Path:
    """The `--metrics-out` file: scorer -> metric -> value and 95 % interval."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: metrics for name, metrics in result.metrics.items()}
    path.write_text(json.dumps(payload, indent=2, default=lambda v: float(np.asarray(v))))
    return path


def log_leakage(report: LeakageReport) -> None:
    """Log the leakage guard's report into the active MLflow run: a dict artifact and tags."""
    import mlflow

    mlflow.log_dict(report.to_dict(), "leakage.json")
    mlflow.set_tags(report.tags())


def log_static_run(
    result: StaticTrainingResult,
    data: StaticDataset,
    config: ProjectConfig,
    leakage: LeakageReport,
    run_name: str | None = None,
    tolerance: float = 0.0,
    force: bool = False,
) -> RunRecord:
    """Record a static-export training run in MLflow, register its bundle, and gate its promotion.

    The current and the best champion are re-scored on this run's evaluation rows (the test
    part of an ordered split; every row with cross-validation, where the champion may have
    seen them, which only makes the gate stricter), so that all figures are of the same rows.

    Args:
        result: The static training result.
        data: The export it was evaluated on.
        config: Project config (registry and gate settings).
        leakage: The leakage guard's report.
        run_name: MLflow run name.
        tolerance: ROC AUC the new model may lose to the current and the best champion.
        force: Promote even when the gate refuses (tagged `registry.forced`).
    """
    import mlflow

    registry = config.registry
    client = mlflow_client(registry)
    exp_id = experiment_id(registry)
    model = result.model
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        _log_model_and_metrics(
            config, model, result.metrics, tags={"data.static": "true", "evaluation": result.plan.description}
        )
        for scorer, auc in cast(dict[str, float], result.summary()["mean_fold_roc_auc"]).items():
            mlflow.log_metric(f"{scorer}.roc_auc.mean_fold", auc)
        mlflow.log_dict(result.metrics, "metrics.json")
        mlflow.log_dict(result.summary(), "evaluation.json")
        log_leakage(leakage)
        _log_plots(model, result.y, result.scores, result.scores, tmp_path / "plots")
        bundle_dir = model.save(tmp_path / BUNDLE_ARTIFACT)
        mlflow.log_artifacts(str(bundle_dir), BUNDLE_ARTIFACT)

        rescore = lambda rival: champion_auc_on_static_rows(data, result, rival)  # noqa: E731
        return _gate_and_register(registry, client, run, exp_id, model, result.metrics, rescore, config, tolerance, force)


def _gate_and_register(
    registry: RegistryConfig,
    client: MlflowClient,
    run: Any,
    exp_id: str,
    model: ScoringModel,
    metrics: dict[str, Any],
    rescore: Callable[[ScoringModel], ChampionOnRows],
    config: ProjectConfig,
    tolerance: float,
    force: bool,
) -> RunRecord:
    """The promotion gate on the run's test rows (champions re-scored by `rescore`), then registration."""
    champion, best = rivals_on_rows(registry, client, rescore)
    decision_ = gate_decision(gate_evidence(metrics, champion, best), config.training.gate, champion_tolerance=tolerance, force=force)
    version, promoted, decision = _register_and_decide(
        registry, client, run, model, decision_, champion.version if champion else None,
        # The rule the decision applied, beside its figures (model.roc_auc, point_grid.roc_auc,
        # champion.roc_auc_same_test), so that a run says why on its own.
        tags={"registry.tolerance": str(tolerance),
              "registry.baseline_tolerance": str(config.training.gate.baseline_tolerance)},
    )  # fmt: skip
    _log_rivals(champion, best)
    _log_windows(model)
    return RunRecord(run.info.run_id, exp_id, str(version), promoted, decision, champion.roc_auc if champion else None)
