"""The stages the `leadscore` commands run: read, guard, train, evaluate, report, in one place each.

Each function takes typed arguments and a `Console` to say what it does, and raises
`WorkflowError` with a one-line reason when it cannot go on; the CLI only parses options,
calls one of these and turns a `WorkflowError` into `error: ...` and exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import pandas as pd

from features.accounts import ACCOUNT_ID
from features.contract import ContractError, Dataset, StaticDataset
from features.grid import PointGrid
from features.spec import FeatureSpec
from model.bundle import ScoringModel
from model.compiled import COMPILE_MIN_ROWS, CompileMode
from model.trend import TREND_PAST_DAYS
from sources.folder import load_dataset
from sources.grids import load_grid
from training.config import ConfigError, ProjectConfig, TrainingConfig, load_config
from training.selection_config import Candidate

if TYPE_CHECKING:
    from model.accounts import AccountModel
    from sources.loader import ProjectData
    from training.leakage import GuardInput, LeakageReport

DEFAULT_DATA_DIR = Path("data/sample")
DEFAULT_QUARANTINE = Path(".leadscore") / "quarantine.csv"


class WorkflowError(ValueError):
    """A stage cannot go on; the message says why and what to do, in one line."""


class Console(Protocol):
    """Where a stage reports: plain lines, and warnings a person should read."""

    def say(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


# A factory of context managers yielding a Dask engine (or None for this process).
EngineFactory = Callable[[], AbstractContextManager[Any]]


def local_engine() -> AbstractContextManager[None]:
    """No Dask: every step runs in this process."""
    return nullcontext()


def read_config(path: Path | None) -> ProjectConfig:
    """The project config (`training.config.load_config`) with its error as a `WorkflowError`."""
    try:
        return load_config(path)
    except ConfigError as error:
        raise WorkflowError(str(error)) from error


def report_validation(dataset: Any, console: Console, quarantine_out: Path | None) -> None:
    """Print the rule breaches of validated data and write its quarantined rows to a CSV."""
    # The data end is a statement, the rest are findings a person should read.
    end = dataset.report.data_end_line()
    for line in dataset.report.lines():
        (console.say if line == end else console.warn)(f"  {line}")
    if len(dataset.quarantine):
        target = quarantine_out or DEFAULT_QUARANTINE
        target.parent.mkdir(parents=True, exist_ok=True)
        # Quarantined rows are raw CRM rows (emails, names): readable by their owner only.
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # a file that was there keeps its mode otherwise
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as sink:
            dataset.quarantine.to_csv(sink, index=False)
        console.warn(f"  {len(dataset.quarantine)} rows set aside in {target}")
    if dataset.leads.empty:
        # Said here, before the leakage guard or the grid have nothing to look at.
        raise WorkflowError(
            "no valid lead: every lead of the data was set aside"
            + (f" ({len(dataset.quarantine)} rows in {quarantine_out or DEFAULT_QUARANTINE}, each with the rule it broke)"
               if len(dataset.quarantine) else "")  # fmt: skip
        )


def read_folder(data: Path, spec: FeatureSpec, console: Console, quarantine_out: Path | None = None) -> Dataset:
    """A contract-format data folder, validated; breaches printed and quarantined rows written."""
    try:
        dataset = load_dataset(data, spec)
    except ContractError as error:
        raise WorkflowError(str(error)) from error
    console.say(f"data: {len(dataset.leads)} leads, {len(dataset.interactions)} interactions from {data}")
    report_validation(dataset, console, quarantine_out)
    return dataset


def read_project(cfg: ProjectConfig, leads_path: Path | None, console: Console, quarantine_out: Path | None = None) -> ProjectData:
    """The config's data: section read and validated (the leads from `leads_path` when given)."""
    from sources.loader import load_project_data

    assert cfg.data is not None
    try:
        project = load_project_data(cfg.data, cfg.features, leads_path)
    except ContractError as error:
        raise WorkflowError(str(error)) from error
    data = project.dataset
    kind = "static export" if isinstance(data, StaticDataset) else f"{len(data.interactions)} interactions"
    console.say(f"data: {len(data.leads)} leads ({kind}) from {project.sources['data.leads']}")
    for key, columns in project.unused_columns.items():
        if columns:
            console.say(f"  {key}: columns not used (list them in data.columns or exclude): {columns}")
    report_validation(data, console, quarantine_out)
    return project


def read_timed(
    cfg: ProjectConfig, data: Path | None, spec: FeatureSpec, console: Console, quarantine_out: Path | None = None
) -> Dataset:
    """Leads with time and their interactions, as every command reads them.

    With a `data:` section, the section is read (`data`, when given, is the leads file read
    instead of `data.leads.source`), as `leadscore train` reads it; without one, `data` is a
    contract-format folder (default data/sample).
    """
    if cfg.data is not None:
        project = read_project(cfg.model_copy(update={"features": spec}), data, console, quarantine_out)
        if not isinstance(project.dataset, Dataset):
            raise WorkflowError(
                "this config reads a static export (no data.leads.created_at): snapshots need leads with a creation time"
            )
        return project.dataset
    return read_folder(data or DEFAULT_DATA_DIR, spec, console, quarantine_out)


def spec_for_data(spec: FeatureSpec, dataset: Dataset, training: TrainingConfig, console: Console) -> FeatureSpec:
    """The feature spec fitted to the data it trains on: its interaction vocabulary.

    No interaction at all: no interaction features (the lead's age at the snapshot stays).
    With `learn_types`: every type seen at least `min_events` times among the events of the
    training part (the leads before the validation and test periods, by creation, among those
    with a matured label), plus `include`, gets features of its own; rarer types, and types seen
    only outside the training part, are folded into other events (`n_other_events_total`) and
    named in a warning with their counts. The learned list is what the bundle stores, as a
    given vocabulary (`learn_types` is then None: scoring the model later learns nothing).
    """
    from features.snapshots import matured_label_cutoff
    from features.vocabulary import frequent_types

    if len(dataset.interactions) == 0:
        console.say("interactions: none in the data; no interaction features (lead age at the snapshot only)")
        return spec.model_copy(update={"events": False})
    rule = spec.learn_types
    if rule is None:
        return spec
    leads = dataset.leads[dataset.leads["created_at"] <= matured_label_cutoff(dataset.data_end, training.horizon_days)]
    leads = leads.sort_values("created_at", kind="stable")
    training_leads = leads["lead_id"].iloc[: int(len(leads) * (1 - training.test_fraction - training.valid_fraction))]
    events = dataset.interactions[dataset.interactions["lead_id"].isin(training_leads)]
    counts = {str(t): int(n) for t, n in events["type"].astype(str).value_counts().items()}
    vocabulary = frequent_types(counts, rule.min_events, rule.include)
    every = {str(t): int(n) for t, n in dataset.interactions["type"].astype(str).value_counts().items()}
    folded = {t: n for t, n in every.items() if t not in vocabulary}
    dataset.report.unknown_types = folded
    included = [t for t in rule.include if counts.get(t, 0) < rule.min_events]
    console.say(
        f"interactions: {len(vocabulary)} types with features of their own, learned from the training part "
        f"({len(events)} events of {len(training_leads)} leads; seen at least features.learn_types.min_events="
        f"{rule.min_events} times{', or in features.learn_types.include' if included else ''}): {vocabulary}"
    )
    if folded:
        listed = ", ".join(
            f"{t} ({counts.get(t, 0)} in the training part, {n} in all)" for t, n in sorted(folded.items(), key=lambda i: (-i[1], i[0]))
        )
        console.warn(
            f"interactions: {len(folded)} types seen fewer than features.learn_types.min_events={rule.min_events} times "
            f"in the training part are folded into other events (n_other_events_total): {listed}"
        )
    try:
        return FeatureSpec.model_validate({**spec.model_dump(), "interaction_types": vocabulary, "learn_types": None})
    except ValueError as error:
        raise WorkflowError(f"features.learn_types: {error}") from error


def simulated_truth(data: Path) -> Callable[[pd.DataFrame, float], np.ndarray] | None:
    """The oracle for simulated data (truth.csv beside the tables), else None."""
    truth_path = data / "truth.csv"
    if not truth_path.exists():
        return None
    from simulator.funnel import read_truth, true_conversion_probability

    truth = read_truth(truth_path)

    def oracle(snapshots: pd.DataFrame, horizon: float) -> np.ndarray:
        return true_conversion_probability(truth, snapshots["lead_id"].to_numpy(), snapshots["as_of"], horizon)

    return oracle


def guard(guard_input: GuardInput, cfg: ProjectConfig, allow_columns: list[str], console: Console) -> tuple[LeakageReport, FeatureSpec]:
    """Run the leakage guard, print its table, and return it with the spec training uses."""
    from training.leakage import run_guard, spec_without

    allowed = [
        cfg.data.feature_name(c) if cfg.data is not None and c not in cfg.features.feature_names() else c
        for c in allow_columns
    ]
    report = run_guard(guard_input, allowed=allowed, seed=cfg.training.seed)
    console.say(report.table())
    for note in report.notes:
        console.say(f"  leakage guard: {note}")
    not_flagged = [c for c in allowed if c not in report.flagged_columns()]
    if not_flagged:
        console.warn(f"  --allow-column {not_flagged}: not flagged, nothing to keep")
    if report.excluded():
        console.warn(f"  left out of training: {report.excluded()} (keep one on purpose with --allow-column NAME)")
    return report, spec_without(cfg.features, report.excluded())


def grid_source(option: Path | None, cfg: ProjectConfig) -> tuple[Path, str]:
    """The grid to score beside the model and the setting that named it (`--grid` or `training.grid`)."""
    return (option, "--grid") if option is not None else (cfg.training.grid, "training.grid")


def read_grid(path: Path, key: str) -> PointGrid:
    """Load a point grid (a file or a built-in name); a failure names the setting that gave it.

    Read before any long step, so a wrong path fails in a second, not after the data is loaded.
    """
    try:
        return load_grid(path)
    except (OSError, ValueError) as error:
        raise WorkflowError(f"{key}: {error}") from error


def grid_for(path: Path, spec: FeatureSpec, point_grid: PointGrid | None = None, key: str = "--grid") -> PointGrid:
    """The point grid (`point_grid`, or read from `path`), checked to read only features of `spec`."""
    if point_grid is None:
        point_grid = read_grid(path, key)
    lacking = [f for f in point_grid.required_features() if f not in spec.feature_names()]
    if lacking:
        raise WorkflowError(
            f"point grid {path} reads {lacking}, which are not features of this model (not in the data, or "
            "left out by the leakage guard); write a grid for your columns (data/grids/README.md) and set "
            "training.grid, or keep a flagged column with --allow-column"
        )
    return point_grid


@dataclass
class TrainRequest:
    """What `leadscore train` and `leadscore retrain` ask for.

    Attributes:
        data: A contract data folder, or with a data: config the leads file to read instead.
        config: The project config file (None: ./leadscore.yaml or the defaults).
        grid: The point grid scored beside the model (None: training.grid).
        metrics_out: Where to write the test metrics as JSON.
        bundle_out: Where to save the bundle folder.
        quarantine_out: Where rows that break the contract are written.
        mlflow: Record the run and register the model.
        run_name: The MLflow run name.
        tolerance: ROC AUC the challenger may lose to the current and the best champion and still be promoted.
        force: Promote even when the promotion gate refuses (recorded as the run tag `registry.forced`).
        allow_columns: Columns the leakage guard flagged that are kept on purpose.
        engine: Where features, LightGBM and scoring run (`local_engine` or a Dask factory).
        on_dask: True when `engine` gives a Dask engine.
    """

    data: Path | None = None
    config: Path | None = None
    grid: Path | None = None
    metrics_out: Path | None = None
    bundle_out: Path | None = None
    quarantine_out: Path | None = None
    mlflow: bool = True
    run_name: str | None = None
    tolerance: float = 0.0
    force: bool = False
    allow_columns: list[str] = field(default_factory=list)
    engine: EngineFactory = local_engine
    on_dask: bool = False


def say_drift(console: Console, lines: list[str], actions: list[dict[str, Any]]) -> None:
    """The drift guard's lines, then what training did about each shifted feature."""
    for line in lines:
        console.say(line)
    for row in actions:
        console.say(f"  {row['feature']}: {row['done']}")


def train(request: TrainRequest, console: Console) -> None:
    """Train on historical leads beside the grid and a logistic regression; save, log, register.

    Raises:
        WorkflowError: The config, the data or a setting does not allow training.
    """
    from tqdm import tqdm

    from training.drift import drift_report
    from training.hazard import fit_when
    from training.leakage import guard_input_for_dataset
    from training.metrics import metrics_table
    from training.pipeline import NotEnoughDataError, run_training
    from training.refit import refit_on_matured
    from training.selection import dates_sentence
    from training.tracking import write_metrics_json

    cfg = read_config(request.config)
    grid_path, grid_key = grid_source(request.grid, cfg)
    point_grid = read_grid(grid_path, grid_key)
    data = request.data
    if cfg.data is not None:
        project = read_project(cfg, data, console, request.quarantine_out)
        if project.is_static:
            if request.on_dask:
                raise WorkflowError("--engine dask trains on leads and interactions; a static export (one row per lead) trains here")
            train_static(project, cfg, request, console, point_grid)
            return
        timed = project.dataset
        assert isinstance(timed, Dataset), "an export that is not static has leads over time"
        dataset, recorded, post_outcome = timed, project.recorded_at, project.post_outcome
    else:
        data = data or DEFAULT_DATA_DIR
        dataset, recorded, post_outcome = read_folder(data, cfg.features, console, request.quarantine_out), None, []
    cfg = cfg.model_copy(update={"features": spec_for_data(cfg.features, dataset, cfg.training, console)})
    t = cfg.training
    leakage, spec = guard(
        guard_input_for_dataset(dataset, cfg.features, t.horizon_days, t.test_fraction, t.snapshot_offsets_days, recorded, post_outcome),
        cfg,
        request.allow_columns,
        console,
    )
    point_grid = grid_for(grid_path, spec, point_grid)
    # disable=None: a bar on a terminal only; a log (CI, cron) gets the step lines alone.
    with tqdm(total=5, desc="training", unit="step", leave=False, disable=None) as bar:

        def progress(message: str) -> None:
            bar.update(1)
            bar.write(f"  {message}")

        truth = simulated_truth(data) if cfg.data is None and data is not None else None
        try:
            with request.engine() as dask:
                hooks = {} if dask is None else {"build_features": dask.snapshot_features, "fit_booster": dask.fit_booster}
                result = run_training(dataset, spec, cfg.training, point_grid, truth, progress, **hooks,
                                      selection=cfg.training.selection)
                # The test period measured the method; the served model learns from every matured label.
                served = refit_on_matured(result, dataset, spec, cfg.training, **{k: v for k, v in hooks.items() if k == "build_features"})
                # When: a hazard over the same periods, measured on the test period, refit as the served model is.
                served, when, when_line = fit_when(result, served, dataset, spec, cfg.training, truth,
                                                    **{k: v for k, v in hooks.items() if k == "build_features"})  # fmt: skip
        except NotEnoughDataError as error:
            raise WorkflowError(f"refusing to train: {error}") from error
    n_test = cast(dict[str, int], result.split["n_snapshots"])["test"]
    console.say(f"\nTest period from {str(result.split['test_start'])[:10]}: {n_test} snapshots")
    console.say(metrics_table(result.metrics))
    console.say(when_line)
    console.say(dates_sentence(served.meta.training) or "")
    drift = drift_report(result.train.rows, result.test.rows, spec, cfg.training.seed)
    changed = {**drift.to_dict(), "actions": drift.actions(result.candidate or Candidate(family="lightgbm"),
                                                           served.meta.training["served"]["trained_through"][:10], leakage.excluded())}  # fmt: skip
    for model in (result.model, served):  # the report reads it from the bundle
        model.meta.training["drift"] = changed
    say_drift(console, drift.lines(), changed["actions"])
    if request.metrics_out:
        write_metrics_json(result, request.metrics_out)
        console.say(f"metrics written to {request.metrics_out}")
    explanations = None
    accounts = None
    if request.bundle_out and ACCOUNT_ID in dataset.leads.columns:
        from training.accounts import train_accounts_for_bundle

        accounts = train_accounts_for_bundle(dataset, spec, cfg.training, data if cfg.data is None else None, console.say)
    if request.bundle_out or request.mlflow:
        from training.report import explain, inputs_from_training, write_bundle_files
        from training.report_accounts import account_section
        from training.report_when import when_section

        # Computed once: written into the bundle folder and logged with the MLflow run.
        explanations = explain(
            dataclasses.replace(inputs_from_training(result), served_through=served.meta.training["served"]["trained_through"],
                                accounts=account_section(accounts) if accounts is not None else None,
                                when=when_section(when.metrics) if when is not None else None)
        )  # fmt: skip
        console.say(
            "learned grid ROC AUC on the test period: "
            f"{explanations.roc_auc['learned_grid']:.3f} (model {explanations.roc_auc['model']:.3f}, "
            f"your grid {explanations.roc_auc['point_grid']:.3f})"
        )
    if request.bundle_out and explanations is not None:
        served.save(request.bundle_out)
        if accounts is not None:
            accounts.model.save(request.bundle_out)
        write_bundle_files(explanations, request.bundle_out)
        console.say(f"bundle saved to {request.bundle_out} (with report.html, importance.json, learned_grid.yaml)")
    if request.mlflow:
        from training.tracking import log_training_run

        record = log_training_run(
            dataclasses.replace(result, model=served),
            dataset,
            cfg,
            run_name=request.run_name,
            tolerance=request.tolerance,
            force=request.force,
            explanations=explanations,
            leakage=leakage,
        )
        console.say(f"MLflow run {record.run_id} ({cfg.registry.resolved_tracking_uri()})")
        console.say(f"registry: {cfg.registry.model_name} {record.decision}")


def train_static(
    project: ProjectData, cfg: ProjectConfig, request: TrainRequest, console: Console, point_grid: PointGrid | None = None
) -> None:
    """Train on a static export: leakage guard, ordered split or 5-fold CV, bundle, MLflow."""
    from tqdm import tqdm

    from training.drift import static_drift
    from training.leakage import guard_input_for_static
    from training.metrics import metrics_table
    from training.pipeline import NotEnoughDataError
    from training.selection import dates_sentence, run_chosen_static_training
    from training.static import evaluation_plan, require_features

    assert cfg.data is not None
    data = project.dataset
    assert isinstance(data, StaticDataset), "train_static takes a static export"
    leakage, spec = guard(
        guard_input_for_static(data, cfg.features, cfg.training.test_fraction, project.recorded_at, project.post_outcome),
        cfg,
        request.allow_columns,
        console,
    )
    grid_path, grid_key = grid_source(request.grid, cfg)
    point_grid = grid_for(grid_path, spec, point_grid, grid_key)
    twins = leakage.twin_groups if any(f.check == "near_duplicates" for f in leakage.findings) else None
    try:
        require_features(spec)
        plan = evaluation_plan(data, cfg.training, order_name=cfg.data.leads.order_name(), twin_groups=twins)
        with tqdm(total=len(plan.splits) + 1, desc="training", unit="fit", leave=False, disable=None) as bar:

            def progress(message: str) -> None:
                bar.update(1)
                bar.write(f"  {message}")

            notes: dict[str, Any] = {"leakage": {"flagged": leakage.flagged_columns(), "allowed": leakage.allowed, "excluded": leakage.excluded()}}
            if plan.kind == "ordered_split":
                drift = static_drift(data, spec, plan, cfg.training.seed)
                for line in drift.lines():
                    console.say(line)
                notes["drift"] = drift.to_dict()
            result, selection = run_chosen_static_training(
                data, spec, cfg.training, point_grid, plan, cfg.training.selection, progress, training_notes=notes,
                order_name=cfg.data.leads.order_name(),
            )
    except NotEnoughDataError as error:
        raise WorkflowError(f"refusing to train: {error}") from error
    except ValueError as error:  # a setting that does not fit the data, e.g. monotone_increasing
        raise WorkflowError(str(error)) from error
    if "drift" in result.model.meta.training:
        chosen = selection.chosen if selection is not None else Candidate(family="lightgbm")
        through = result.model.meta.training.get("served", {}).get("trained_through_order")
        actions = drift.actions(chosen, None if through is None else f"{cfg.data.leads.order_name()} {through:g}", leakage.excluded())
        result.model.meta.training["drift"]["actions"] = actions
        say_drift(console, [], actions)
    summary = result.summary()
    if selection is not None:
        console.say(f"\nchosen on {len(selection.folds)} rolling-origin folds before the test part (ROC AUC per fold):")
        for line in selection.lines():
            console.say(f"  {line}")
    console.say(f"\n{plan.description}")
    console.say(metrics_table(result.metrics))
    sentence = dates_sentence(result.model.meta.training, cfg.data.leads.order_name())
    if sentence:
        console.say(sentence)
    means = cast(dict[str, float], summary["mean_fold_roc_auc"])
    console.say("mean ROC AUC over folds: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    if request.metrics_out:
        request.metrics_out.parent.mkdir(parents=True, exist_ok=True)
        request.metrics_out.write_text(json.dumps({**result.metrics, "evaluation": summary}, indent=2))
        console.say(f"metrics written to {request.metrics_out}")
    if request.bundle_out:
        result.model.save(request.bundle_out)
        console.say(f"bundle saved to {request.bundle_out}")
    if request.mlflow:
        from training.tracking import log_static_run

        record = log_static_run(
            result, data, cfg, leakage, run_name=request.run_name, tolerance=request.tolerance, force=request.force
        )
        console.say(f"MLflow run {record.run_id} ({cfg.registry.resolved_tracking_uri()})")
        console.say(f"registry: {cfg.registry.model_name} {record.decision}")


def parse_every(every: str) -> int:
    """`30d` as 30 (whole days)."""
    if not every.endswith("d") or not every[:-1].isdigit() or int(every[:-1]) < 1:
        raise WorkflowError(f"--every must look like 30d (whole days), got {every!r}")
    return int(every[:-1])


def backtest(
    data: Path | None, every: str, config: Path | None, grid: Path | None, start: str | None, out: Path | None, console: Console
) -> pd.DataFrame:
    """Replay history: retrain every period, compare with a never-retrained model and the grid.

    The data is read as `leadscore train` reads it: the config's `data:` section, else the folder.
    """
    from training.lifecycle import backtest as run_backtest
    from training.pipeline import NotEnoughDataError

    every_days = parse_every(every)
    cfg = read_config(config)
    grid_path, grid_key = grid_source(grid, cfg)
    point_grid = read_grid(grid_path, grid_key)
    dataset = read_timed(cfg, data, cfg.features, console)
    spec = spec_for_data(cfg.features, dataset, cfg.training, console)
    point_grid = grid_for(grid_path, spec, point_grid, grid_key)
    try:
        table = run_backtest(
            dataset,
            spec,
            cfg.training,
            point_grid,
            every_days=every_days,
            first_cutoff=pd.Timestamp(start, tz="UTC") if start else None,
            progress=lambda message: console.say(f"  {message}"),
        )
    except NotEnoughDataError as error:
        raise WorkflowError(str(error)) from error
    console.say(table.to_markdown(index=False, floatfmt=".3f"))
    means = table[["retrained_auc", "not_refit_auc", "never_retrained_auc", "grid_auc"]].mean()
    console.say(
        f"mean AUC: retrained {means['retrained_auc']:.3f}, not refit on its newest leads {means['not_refit_auc']:.3f}, "
        f"never retrained {means['never_retrained_auc']:.3f}, grid {means['grid_auc']:.3f}"
    )
    if out:
        table.to_csv(out, index=False)
    return table


def champion_model(cfg: ProjectConfig) -> ScoringModel:
    """The registry's champion bundle, loaded."""
    from model.registry import champion_bundle_path

    try:
        path, _version = champion_bundle_path(cfg.registry)
    except LookupError as error:
        raise WorkflowError(str(error)) from error
    return ScoringModel.load(path)


def load_model(bundle: Path | None, cfg: ProjectConfig) -> ScoringModel:
    """The bundle folder given, else the registry's champion."""
    if bundle is None:
        return champion_model(cfg)
    try:
        return ScoringModel.load(bundle)
    except (OSError, ValueError) as error:
        raise WorkflowError(str(error)) from error


def evaluate(
    data: Path | None, bundle: Path | None, config: Path | None, since: str | None, metrics_out: Path | None, console: Console
) -> dict[str, dict[str, Any]]:
    """Score a trained model and its point grid on a data set's matured snapshots (same rows)."""
    from features.engine import snapshot_features
    from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times

    cfg = read_config(config)
    model = load_model(bundle, cfg)
    if not model.spec.interactions:
        return evaluate_static(model, cfg, data, metrics_out, console)
    if data is None and cfg.data is None:
        raise WorkflowError("--data is required without a data: section: the folder with the leads and interactions to evaluate on")
    dataset = read_timed(cfg, data, model.spec, console)
    leads = dataset.leads
    if since:
        leads = leads[leads["created_at"] >= pd.Timestamp(parse_since(since))]
    horizon = model.meta.horizon_days
    snaps = snapshot_times(leads, cfg.training.snapshot_offsets_days, matured_label_cutoff(dataset.data_end, horizon))
    if snaps.empty:
        raise WorkflowError("no snapshot with a matured label in this data")
    y = conversion_labels(snaps, dataset.leads, horizon)
    rows = snapshot_features(dataset.leads, dataset.interactions, snaps, model.spec)
    grid_points = model.meta.grid.score_frame(rows.to_frame(model.spec))
    scores = {"model": model.probability(model.encode(rows)), "point_grid": grid_points}
    truth = simulated_truth(data) if cfg.data is None and data is not None else None
    if truth is not None:
        scores["oracle"] = truth(snaps, horizon)
    console.say(f"{len(snaps)} snapshots, {int(y.sum())} conversions within {horizon:g} days")
    return scorer_metrics_table(y, scores, cfg.training.n_bootstrap, metrics_out, console, groups=snaps["lead_id"].to_numpy())


def evaluate_static(
    model: ScoringModel, cfg: ProjectConfig, data: Path | None, metrics_out: Path | None, console: Console
) -> dict[str, dict[str, Any]]:
    """`evaluate` for a model trained on a static export: every row, its exported outcome."""
    from features.engine import lead_attribute_rows

    if cfg.data is None:
        raise WorkflowError(
            f"model {model.meta.model_version} was trained on a static export (one row per lead): "
            "evaluate it with the config that reads such an export (--config, with a data: section)"
        )
    project = read_project(cfg.model_copy(update={"features": model.spec}), data, console)
    if not project.is_static:
        raise WorkflowError(
            f"model {model.meta.model_version} was trained on a static export, and this config reads leads with "
            "interactions: evaluate it on an export of the same shape"
        )
    leads = project.dataset.leads
    y = leads["converted"].to_numpy().astype(np.int8)
    if y.min(initial=1) == y.max(initial=0):
        raise WorkflowError(f"all {len(y)} rows have the same outcome: ROC AUC needs conversions and non-conversions")
    rows = lead_attribute_rows(leads, model.spec)
    points = model.meta.grid.score_frame(rows.to_frame(model.spec))
    scores = {"model": model.probability(model.encode(rows)), "point_grid": points}
    console.say(f"{len(y)} leads, {int(y.sum())} conversions (static export: outcomes as exported)")
    results = scorer_metrics_table(y, scores, cfg.training.n_bootstrap, metrics_out, console)
    console.say("(rows the model was trained on score better than new leads will: evaluate on a later export)")
    return results


def scorer_metrics_table(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    n_bootstrap: int,
    metrics_out: Path | None,
    console: Console,
    groups: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Each scorer's metrics on the same rows, printed and written as JSON."""
    from training.metrics import metrics_table, scorer_metrics

    results = {}
    for name, s in scores.items():
        # Grid points are not probabilities: rank metrics only, after a monotone squash.
        p = s if name != "point_grid" else 1 / (1 + np.exp(-(s - s.mean()) / (s.std() + 1e-9)))
        results[name] = scorer_metrics(y, p, n_bootstrap=n_bootstrap, groups=groups)
    console.say(metrics_table(results))
    console.say("(point_grid log_loss and brier use squashed points, not probabilities: compare its ranking metrics only)")
    if metrics_out:
        metrics_out.write_text(json.dumps(results, indent=2))
    return results


def write_report(bundle: Path, data: Path | None, out: Path, config: Path | None, console: Console) -> None:
    """Write the leadership report (one offline HTML file) for a bundle, on a data set's recent leads.

    The data is the config's `data:` section (`data`: its leads file instead), else the folder `data`.
    """
    from training.report import explain, inputs_from_dataset

    cfg = read_config(config)
    model = load_model(bundle, cfg)
    if not model.spec.interactions:
        raise WorkflowError(
            f"{bundle}: trained on a static export (one row per lead); the report reads leads over time "
            "(a test period of recent leads). Compare this model with your grid by `leadscore evaluate "
            "--config CONFIG --bundle BUNDLE`; its cross-validated figures are in the MLflow run"
        )
    dataset = read_timed(cfg, data, model.spec, console)
    try:
        inputs = inputs_from_dataset(model, dataset, cfg.training.snapshot_offsets_days)
    except ValueError as error:
        raise WorkflowError(str(error)) from error
    explanations = explain(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(explanations.html, encoding="utf-8")
    auc = explanations.roc_auc
    console.say(
        f"report written to {out} (ROC AUC on leads created from {inputs.test_start[:10]}: model "
        f"{auc['model']:.3f}, learned grid {auc['learned_grid']:.3f}, your grid {auc['point_grid']:.3f})"
    )


def open_log(target: str | None) -> Any:
    """The score log at `target` (a JSON lines file or a SQLAlchemy URL), else `$LEADSCORE_SCORE_LOG`."""
    from model.scorelog import SCORE_LOG_ENV, ScoreLogError, open_score_log
    from model.settings import load_settings

    target = target or load_settings().score_log
    if not target:
        raise WorkflowError(f"no score log: pass --log, or set {SCORE_LOG_ENV} as for the service")
    try:
        return open_score_log(target, create=False)
    except ScoreLogError as error:
        raise WorkflowError(str(error)) from error


def parse_since(text: str) -> datetime:
    """`7d`, `12h` (before now) or an ISO date/time (UTC when no zone) as a UTC datetime."""
    units = {"d": "days", "h": "hours"}
    try:
        if text[-1:] in units and text[:-1].isdigit():
            return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise WorkflowError(f"--since must look like 7d, 12h or 2025-06-01, got {text!r}") from None
    except OverflowError:  # 100000000d, or 0001-01-01T00:00:00+14:00: before the year 1 in UTC
        raise WorkflowError(f"--since {text!r} is out of range: in UTC it falls outside the years 1 to 9999") from None


def monitor(
    log: str | None,
    bundle: Path | None,
    since: str,
    reference: Path | None,
    config: Path | None,
    out: Path | None,
    console: Console,
) -> list[str]:
    """PSI of every feature and of the probability, recent scores against the training data.

    Returns:
        The variables that drifted (PSI >= 0.2).
    """
    from model.monitoring import MIN_ROWS, PROBABILITY, drift_table, reference_from_data
    from model.scorelog import ScoreLogError

    cfg = read_config(config)
    model = load_model(bundle, cfg)
    version = model.meta.model_version
    ref = model.meta.reference
    if reference is not None:
        dataset = read_folder(reference, model.spec, console)
        try:
            ref = reference_from_data(model, dataset, cfg.training.snapshot_offsets_days)
        except ValueError as error:
            raise WorkflowError(f"--reference {reference}: {error}") from error
    if ref is None:
        raise WorkflowError(
            f"the bundle of model {version} has no reference distribution (saved before monitoring existed): "
            "pass --reference DATA_FOLDER, e.g. the data it was trained on"
        )
    store = open_log(log)
    start = parse_since(since)
    try:
        rows, unreadable = store.read(since=start)
    except ScoreLogError as error:
        raise WorkflowError(str(error)) from error
    if unreadable:
        console.warn(f"{unreadable} records of {store.describe()} could not be read and are left out")
    mine = rows[rows["model_version"] == version]
    others = rows.loc[rows["model_version"] != version, "model_version"].value_counts()
    if len(others):
        console.say(f"left out: {int(others.sum())} scores of other model versions ({', '.join(others.index[:5])})")
    if mine.empty:
        raise WorkflowError(f"no score of model {version} in {store.describe()} since {start:%Y-%m-%d %H:%M} UTC")
    features = pd.DataFrame.from_records(mine["features"].tolist())
    table = drift_table(ref, features, mine["probability"].to_numpy(dtype=float))
    console.say(
        f"{len(mine)} scores of model {version} since {start:%Y-%m-%d %H:%M} UTC, against "
        f"{ref.n_features_rows} training snapshots (features) and {ref.n_probability_rows} validation snapshots (probability)"
    )
    if len(mine) < MIN_ROWS:
        console.warn(f"only {len(mine)} scores: PSI is noisy below {MIN_ROWS}")
    console.say(table.to_markdown(index=False, floatfmt=".4f"))
    drifted = table.loc[table["status"] == "drift", "variable"].tolist()
    watched = table.loc[table["status"] == "watch", "variable"].tolist()
    probability = table.loc[table["variable"] == PROBABILITY].iloc[0]
    console.say(
        f"probability PSI {probability['psi']:.3f} ({probability['status']}); drift: {len(drifted)} "
        f"{drifted[:10]}; watch: {len(watched)} {watched[:10]}"
    )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"model_version": version, "since": start.isoformat(), "n_scores": len(mine),
                   "variables": table.to_dict(orient="records")}  # fmt: skip
        out.write_text(json.dumps(summary, indent=2))
    return drifted


def forget(lead_id: str, log: str | None, console: Console, lead_store: str | None = None) -> int:
    """Erase a lead from the score log and the lead store (right to erasure); returns how many records went.

    The score log is `log`, else `$LEADSCORE_SCORE_LOG`; the lead store is `lead_store`, else
    `$LEADSCORE_LEAD_STORE`, else the state folder's `leads.db` when it exists. Each one given
    or configured must exist (a mistyped target is refused, never created empty); with neither,
    there is nothing to erase from, which is an error too.
    """
    from model.leadstore import LeadStoreError, lead_store_url, open_lead_store
    from model.scorelog import SCORE_LOG_ENV, ScoreLogError, lead_key, lead_pseudonym
    from model.settings import load_settings

    settings = load_settings()
    has_log = bool(log or settings.score_log)
    store_url = lead_store or lead_store_url(settings)
    has_store = lead_store is not None or settings.lead_store is not None or (settings.state_dir / "leads.db").is_file()
    if not has_log and not has_store:
        raise WorkflowError(
            f"nothing to erase from: no score log (--log, {SCORE_LOG_ENV}) and no lead store (--lead-store, "
            f"LEADSCORE_LEAD_STORE, or {settings.state_dir / 'leads.db'})"
        )
    deleted = 0
    if has_log:
        store = open_log(log)
        try:
            pseudonym = lead_pseudonym(lead_id, lead_key(create=False))
            from_log = int(store.forget(pseudonym))
        except (ScoreLogError, ValueError) as error:
            raise WorkflowError(str(error)) from error
        console.say(f"deleted {from_log} records of lead {pseudonym} from {store.describe()}")
        deleted += from_log
    if has_store:
        try:
            leads = open_lead_store(store_url, create=False)
            from_store = leads.forget(lead_id)
        except LeadStoreError as error:
            raise WorkflowError(str(error)) from error
        # The lead store holds the lead_id itself: the message names the lead by what was typed.
        console.say(f"deleted {from_store} rows of the lead from the lead store {leads.describe()}")
        deleted += from_store
    return deleted


def score_folder(
    data: Path | None,
    out: Path,
    model: ScoringModel,
    as_of: datetime | None,
    *,
    reasons: bool,
    language: str,
    engine: EngineFactory,
    compiled: CompileMode,
    console: Console,
    cfg: ProjectConfig | None = None,
    account_model: AccountModel | None = None,
    top_reasons: int = 1,
) -> pd.DataFrame | None:
    """`leadscore score` on a data folder, or on the config's `data:` section: validated tables in, one row per lead out.

    A folder of parts (`sources.partitioned`, `leadscore prepare`) is read, validated and scored
    one part at a time (`training.streaming`); None is returned then, the rows being in `out` only.
    """
    from model.scoring import score_table
    from sources.partitioned import is_partitioned

    if out.suffix not in (".csv", ".parquet"):
        raise WorkflowError(f"--out {out}: a data folder is scored to .csv or .parquet")
    if data is not None and (cfg is None or cfg.data is None) and is_partitioned(data):
        from training.streaming import score_parts_folder

        score_parts_folder(data, out, model, as_of or datetime.now(UTC), reasons=reasons, language=language,
                           engine=engine, compiled=compiled, console=console, top_reasons=top_reasons)
        if account_model is not None:
            # Parts are cut by lead, so an account's leads may be in several parts.
            console.warn("account scores not written: a folder of parts is scored lead by lead; score a flat folder for them")
        return None
    if cfg is not None and cfg.data is not None:
        dataset = read_timed(cfg, data, model.spec, console)
    elif data is None:
        raise WorkflowError("--input is required without a data: section: a data folder or a JSON-lines file")
    else:
        dataset = read_folder(data, model.spec, console)
    when = as_of or datetime.now(UTC)
    with engine() as dask:
        scorer = score_table if dask is None else dask.score_table
        table = scorer(model, dataset.leads, dataset.interactions, when, with_reasons=reasons, language=language,
                       compiled=compiled, top_reasons=top_reasons)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    later = len(dataset.leads) - len(table)
    console.say(f"scored {len(table)} leads to {out}" + (f"; {later} created after as_of not scored" if later else ""))
    if account_model is not None and ACCOUNT_ID in dataset.leads.columns:
        from model.accounts import account_scores_table

        accounts = account_scores_table(account_model, model, dataset.leads, dataset.interactions, pd.Timestamp(when))
        accounts_out = out.with_name(f"{out.stem}_accounts{out.suffix}")
        accounts.to_parquet(accounts_out, index=False) if out.suffix == ".parquet" else accounts.to_csv(accounts_out, index=False)
        console.say(f"scored {len(accounts)} accounts to {accounts_out}")
    return table


LINES_PER_CHUNK = 5_000  # JSON lines scored together: features, predictions and reasons in one pass


def score_lines(
    source: Path,
    out: Path,
    model: ScoringModel,
    as_of: datetime | None,
    *,
    reasons: bool,
    language: str,
    console: Console,
    compiled: CompileMode = CompileMode.auto,
) -> list[dict[str, Any]]:
    """`leadscore score` on JSON lines: each line a lead as in POST /score's `lead`.

    A line that fails validation is reported with its number in `<out>.errors.json`, never dropped.
    Without reasons, `compiled` says when to predict with the compiled forest (same scores); `auto`
    weighs the whole file, as `score_table` weighs its batch: a file whose trend rows (two past
    instants a lead) reach `COMPILE_MIN_ROWS` compiles the forest once, if not cached.

    Returns:
        The rejected lines (`line`, `error`); empty when every line was scored.
    """
    from tqdm import tqdm

    from model.lines import score_line_chunk
    from model.memory import heap_frozen

    answers: list[str] = []
    errors: list[dict[str, Any]] = []
    lines = source.read_text().splitlines()
    if compiled is CompileMode.auto and model.meta.trend is not None and len(lines) * len(TREND_PAST_DAYS) >= COMPILE_MIN_ROWS:
        compiled = CompileMode.always  # the chunks are small; the file is the batch
    # Each line keeps its own errors and line number; the features, predictions and reasons of a
    # chunk of lines are computed at once (`model.lines`: the common lines in columns, any other
    # alone; the answers `score_lead` gives, as for POST /score_batch).
    with tqdm(total=len(lines), desc="scoring", unit="lead", disable=None) as progress, heap_frozen():
        for start in range(0, len(lines), LINES_PER_CHUNK):
            chunk = lines[start : start + LINES_PER_CHUNK]
            scored, rejected = score_line_chunk(
                model, chunk, start + 1, as_of, with_reasons=reasons, language=language, compiled=compiled
            )
            answers.extend(scored)
            errors.extend(rejected)
            progress.update(len(chunk))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        pd.DataFrame([_flat_score(json.loads(answer)) for answer in answers]).to_csv(out, index=False)
    else:
        out.write_text("".join(answer + "\n" for answer in answers))
    console.say(f"scored {len(answers)} leads to {out}")
    if errors:
        err_path = out.with_suffix(out.suffix + ".errors.json")
        err_path.write_text(json.dumps(errors, indent=2))
        console.warn(f"{len(errors)} lines rejected (see {err_path}); first: line {errors[0]['line']}: {errors[0]['error'][0]}")
    return errors


def _flat_score(response: dict[str, Any]) -> dict[str, Any]:
    # One CSV row of a /score response: the headline fields, the grid's points and the top reason, then
    # the sub-scores and the trend (the columns of `model.scoring.TABLE_COLUMNS`, in its order).
    up = (response.get("reasons") or {}).get("up") or []
    return {k: response[k] for k in ("lead_id", "as_of", "probability", "score", "tier", "mql", "model_version")} | {
        "grid_points": response["point_grid"]["points"],
        "top_reason": up[0].get("label") if up else None,
    } | {k: response[k] for k in ("fit", "engagement", "cell", "score_7d_ago", "score_30d_ago", "trend")}
