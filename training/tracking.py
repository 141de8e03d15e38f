"""MLflow for training runs: parameters, data fingerprint, metrics, plots, bundle, registry.

The `champion` alias moves only when the new model beats the current champion on the same
test snapshots (the champion is re-scored on them with its own feature spec).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import roc_auc_score

from features.contract import Dataset
from features.engine import snapshot_features
from model.bundle import REPORT_FILE, ScoringModel
from training.config import ProjectConfig
from model.registry import RegistryConfig
from model.registry import (
    BUNDLE_ARTIFACT,
    PREVIOUS_CHAMPION_TAG,
    champion_version,
    download_version,
    mlflow_client,
    set_champion,
)
from training import plots
from training.leakage import LeakageReport
from training.lifecycle import promotion_decision
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


def score_champion_on(data: Dataset, result: TrainingResult, registry: RegistryConfig, version: str) -> float:
    """ROC AUC of registered `version` on the new run's test snapshots."""
    with tempfile.TemporaryDirectory() as tmp:
        champion = ScoringModel.load(download_version(registry, version, Path(tmp)))
        rows = snapshot_features(data.leads, data.interactions, result.test.snapshots, champion.spec)
        p = champion.probability(champion.encode(rows))
    return float(roc_auc_score(result.test.y, p))


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


def _register_and_decide(
    registry: RegistryConfig,
    client: MlflowClient,
    run: ActiveRun,
    model: ScoringModel,
    metrics: dict[str, Any],
    champion_auc: float | None,
    previous: str | None,
    *,
    tolerance: float,
    require_beats_grid: bool,
    tags: dict[str, str] | None = None,
) -> tuple[str, bool, str]:
    """Register the run's bundle as a new version and move `champion` to it if it wins.

    The outcome is tagged on the active run (`registry.version`, `registry.promoted`,
    `registry.decision`), so that a run says what became of its model.

    Args:
        registry: Registry settings (model name).
        client: The MlflowClient of the registry.
        run: The active MLflow run, whose `bundle` artifact the version points to.
        model: The trained model (its `model_version` tags the registry version).
        metrics: The run's metrics: the model's and the point grid's ROC AUC decide.
        champion_auc: The current champion's ROC AUC to compare with, None when there is
            none to compare with.
        previous: The current champion's registry version, None when there is none.
        tolerance: ROC AUC the new model may lose to the champion and still be promoted.
        require_beats_grid: Refuse promotion unless the new model beats the grid.
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
    decision_ = promotion_decision(
        metrics["model"]["roc_auc"]["value"], champion_auc, metrics["point_grid"]["roc_auc"]["value"],
        tolerance, require_beats_grid,
    )  # fmt: skip
    promoted = decision_.promote
    decision = f"version {version}: {decision_.reason}" + (f" (champion was v{previous})" if previous else "")
    if promoted:
        if previous:
            client.set_model_version_tag(registry.model_name, str(version), PREVIOUS_CHAMPION_TAG, previous)
        set_champion(registry, str(version))
    mlflow.set_tags({
        "registry.version": str(version), "registry.promoted": str(promoted), "registry.decision": decision,
        **(tags or {}),
    })  # fmt: skip
    return version, promoted, decision


def log_training_run(
    result: TrainingResult,
    data: Dataset,
    config: ProjectConfig,
    run_name: str | None = None,
    extra_artifacts: dict[str, Path] | None = None,
    tolerance: float = 0.0,
    require_beats_grid: bool = False,
    explanations: Explanations | None = None,
    leakage: LeakageReport | None = None,
) -> RunRecord:
    """Record a training run in MLflow, register its bundle, and move `champion` if it wins.

    Args:
        result: The training result.
        data: The data it was trained on (the champion is re-scored on its test snapshots).
        config: Project config (registry settings).
        run_name: MLflow run name.
        extra_artifacts: More files to log, artifact folder -> path.
        tolerance: ROC AUC the new model may lose to the champion and still be promoted
            (0: it must be strictly better, as for `leadscore train`).
        require_beats_grid: Refuse promotion unless the new model beats the grid.
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

        previous = champion_version(registry)
        champion_auc = score_champion_on(data, result, registry, previous) if previous else None
        version, promoted, decision = _register_and_decide(
            registry, client, run, model, result.metrics, champion_auc, previous,
            tolerance=tolerance, require_beats_grid=require_beats_grid,
            # The rule the decision applied, beside its figures (model.roc_auc, point_grid.roc_auc,
            # champion.roc_auc_same_test), so that a run says why on its own.
            tags={"registry.tolerance": str(tolerance), "registry.require_beats_grid": str(require_beats_grid)},
        )  # fmt: skip
        if champion_auc is not None:
            mlflow.log_metric("champion.roc_auc_same_test", champion_auc)
    return RunRecord(run.info.run_id, exp_id, str(version), promoted, decision, champion_auc)


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
    config: ProjectConfig,
    leakage: LeakageReport,
    run_name: str | None = None,
) -> RunRecord:
    """Record a static-export training run in MLflow and register its bundle.

    A static model is compared with the champion on the ROC AUC each recorded for its own
    evaluation (there are no shared test snapshots to re-score); the champion moves when the
    new model is better, or when the champion was not trained on a static export.
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
        for scorer, auc in result.summary()["mean_fold_roc_auc"].items():  # type: ignore[union-attr]
            mlflow.log_metric(f"{scorer}.roc_auc.mean_fold", auc)
        mlflow.log_dict(result.metrics, "metrics.json")
        mlflow.log_dict(result.summary(), "evaluation.json")
        log_leakage(leakage)
        _log_plots(model, result.y, result.scores, result.scores, tmp_path / "plots")
        bundle_dir = model.save(tmp_path / BUNDLE_ARTIFACT)
        mlflow.log_artifacts(str(bundle_dir), BUNDLE_ARTIFACT)

        previous = champion_version(registry)
        champion_auc = None
        if previous:
            with tempfile.TemporaryDirectory() as champion_tmp:
                champion_meta = ScoringModel.load(download_version(registry, previous, Path(champion_tmp))).meta
            if champion_meta.training.get("static"):
                champion_auc = float(champion_meta.metrics["model"]["roc_auc"])
        version, promoted, decision = _register_and_decide(
            registry, client, run, model, result.metrics, champion_auc, previous, tolerance=0.0, require_beats_grid=False
        )
    return RunRecord(run.info.run_id, exp_id, str(version), promoted, decision, champion_auc)
