"""The `leadscore` command line: one command per stage.

Everything that touches files, MLflow or the terminal lives here; the stages it calls are pure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from model.compiled import CompileMode

app = typer.Typer(
    help="Predictive lead scoring: simulate data, train LightGBM beside your point grid, "
    "track runs in MLflow, score leads, serve the API.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Project config (YAML). Default: ./leadscore.yaml if present, else built-in defaults."),
]


@app.callback()
def _before_any_command() -> None:
    # OpenMP threads spin while they wait, by default: on a machine that other processes keep
    # busy, that made LightGBM training up to 28x slower (benchmarks/README.md). Set before
    # LightGBM loads; an OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Engine(str, Enum):
    local = "local"
    dask = "dask"


EngineOption = Annotated[
    Engine,
    typer.Option(help="Where features, LightGBM and batch scoring run: this process, or a Dask cluster (docs/scale-out.md)."),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(help="Dask scheduler address, e.g. tcp://10.0.0.5:8786. Default with --engine dask: a LocalCluster on this machine."),
]


@contextmanager
def _dask_engine(engine: Engine, scheduler: str | None) -> Iterator[object | None]:
    """A `training.distributed.DaskEngine` for --engine dask, else None."""
    if engine is Engine.local:
        if scheduler:
            raise _fail("--scheduler is for --engine dask")
        yield None
        return
    try:
        from scaleout.dask import dask_client
        from training.distributed import DaskEngine
    except ModuleNotFoundError as error:
        raise _fail(f"--engine dask needs Dask ({error.name} is not installed): pip install 'leadscore[dask]'") from error
    with dask_client(scheduler) as client:
        dask = DaskEngine(client)
        typer.echo(f"dask: {dask.n_workers} workers at {scheduler or 'a LocalCluster on this machine'}")
        yield dask


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _load_config(path: Path | None):  # noqa: ANN202
    from training.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as error:
        raise _fail(str(error)) from error


def _load_data(data: Path, config, quarantine_out: Path | None):  # noqa: ANN001, ANN202
    from features.contract import ContractError
    from sources.folder import load_dataset

    try:
        dataset = load_dataset(data, config.features)
    except ContractError as error:
        raise _fail(str(error)) from error
    typer.echo(f"data: {len(dataset.leads)} leads, {len(dataset.interactions)} interactions from {data}")
    _report_validation(dataset, quarantine_out)
    return dataset


def _report_validation(dataset, quarantine_out: Path | None) -> None:  # noqa: ANN001
    """Print the rule breaches of validated data and write its quarantined rows to a CSV."""
    for line in dataset.report.lines():
        typer.secho(f"  {line}", fg=typer.colors.YELLOW)
    if len(dataset.quarantine):
        target = quarantine_out or Path(".leadscore") / "quarantine.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset.quarantine.to_csv(target, index=False)
        typer.secho(f"  {len(dataset.quarantine)} rows set aside in {target}", fg=typer.colors.YELLOW)


def _truth_for(data: Path):  # noqa: ANN202
    """The oracle for simulated data (truth.csv beside the tables), else None."""
    truth_path = data / "truth.csv"
    if not truth_path.exists():
        return None
    from simulator.funnel import read_truth, true_conversion_probability

    truth = read_truth(truth_path)

    def oracle(snapshots, horizon):  # noqa: ANN001, ANN202
        return true_conversion_probability(truth, snapshots["lead_id"].to_numpy(), snapshots["as_of"], horizon)

    return oracle


DEFAULT_DATA_DIR = Path("data/sample")


def _load_project_data(cfg, leads_path: Path | None, quarantine_out: Path | None):  # noqa: ANN001, ANN202
    """Read the config's data: section (the leads from `leads_path` when given)."""
    from features.contract import ContractError
    from sources.loader import load_project_data

    try:
        project = load_project_data(cfg.data, cfg.features, leads_path)
    except ContractError as error:
        raise _fail(str(error)) from error
    data = project.dataset
    kind = "static export" if project.is_static else f"{len(data.interactions)} interactions"
    typer.echo(f"data: {len(data.leads)} leads ({kind}) from {project.sources['data.leads']}")
    for key, columns in project.unused_columns.items():
        if columns:
            typer.echo(f"  {key}: columns not used (list them in data.columns or exclude): {columns}")
    _report_validation(data, quarantine_out)
    return project


def _leakage_guard(guard_input, cfg, allow_columns: list[str]):  # noqa: ANN001, ANN202
    """Run the leakage guard, print its table, and return it with the spec training uses."""
    from training.leakage import run_guard, spec_without

    allowed = [cfg.data.feature_name(c) if cfg.data is not None and c not in cfg.features.feature_names() else c for c in allow_columns]
    report = run_guard(guard_input, allowed=allowed, seed=cfg.training.seed)
    typer.echo(report.table())
    for note in report.notes:
        typer.echo(f"  leakage guard: {note}")
    not_flagged = [c for c in allowed if c not in report.flagged_columns()]
    if not_flagged:
        typer.secho(f"  --allow-column {not_flagged}: not flagged, nothing to keep", fg=typer.colors.YELLOW)
    if report.excluded():
        typer.secho(
            f"  left out of training: {report.excluded()} (keep one on purpose with --allow-column NAME)",
            fg=typer.colors.YELLOW,
        )
    return report, spec_without(cfg.features, report.excluded())


def _grid_for(path: Path, spec):  # noqa: ANN001, ANN202
    """Load the point grid and check the model's features cover what it reads."""
    from sources.grids import load_grid

    try:
        point_grid = load_grid(path)
    except (OSError, ValueError) as error:
        raise _fail(str(error)) from error
    lacking = [f for f in point_grid.required_features() if f not in spec.feature_names()]
    if lacking:
        raise _fail(
            f"point grid {path} reads {lacking}, which are not features of this model (not in the data, or "
            "left out by the leakage guard); write a grid for your columns (data/grids/README.md) and set "
            "training.grid, or keep a flagged column with --allow-column"
        )
    return point_grid


def _train_static(project, cfg, grid, metrics_out, bundle_out, mlflow, run_name, allow_columns):  # noqa: ANN001, ANN202
    """Train on a static export: leakage guard, ordered split or 5-fold CV, bundle, MLflow."""
    from tqdm import tqdm

    from training.leakage import guard_input_for_static
    from training.metrics import metrics_table
    from training.pipeline import NotEnoughDataError
    from training.static import evaluation_plan, require_features, run_static_training

    data = project.dataset
    leakage, spec = _leakage_guard(
        guard_input_for_static(data, cfg.features, cfg.training.test_fraction, project.recorded_at, project.post_outcome),
        cfg,
        allow_columns,
    )
    point_grid = _grid_for(grid or cfg.training.grid, spec)
    twins = leakage.twin_groups if any(f.check == "near_duplicates" for f in leakage.findings) else None
    try:
        require_features(spec)
        plan = evaluation_plan(data, cfg.training, order_name=cfg.data.leads.order or "order", twin_groups=twins)
        with tqdm(total=len(plan.splits) + 1, desc="training", unit="fit", leave=False, disable=None) as bar:

            def progress(message: str) -> None:
                bar.update(1)
                bar.write(f"  {message}")

            result = run_static_training(
                data, spec, cfg.training, point_grid, plan, progress,
                training_notes={"leakage": {"flagged": leakage.flagged_columns(), "allowed": leakage.allowed, "excluded": leakage.excluded()}},
            )
    except NotEnoughDataError as error:
        raise _fail(f"refusing to train: {error}") from error
    except ValueError as error:  # a setting that does not fit the data, e.g. monotone_increasing
        raise _fail(str(error)) from error
    summary = result.summary()
    typer.echo(f"\n{plan.description}")
    typer.echo(metrics_table(result.metrics))
    means = summary["mean_fold_roc_auc"]
    typer.echo("mean ROC AUC over folds: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps({**result.metrics, "evaluation": summary}, indent=2))
        typer.echo(f"metrics written to {metrics_out}")
    if bundle_out:
        result.model.save(bundle_out)
        typer.echo(f"bundle saved to {bundle_out}")
    if mlflow:
        from training.tracking import log_static_run

        record = log_static_run(result, cfg, leakage, run_name=run_name)
        typer.echo(f"MLflow run {record.run_id} ({cfg.registry.resolved_tracking_uri()})")
        typer.echo(f"registry: {cfg.registry.model_name} {record.decision}")


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write leads.csv, interactions.csv, truth.csv, meta.json.")],
    leads: Annotated[int, typer.Option("--leads", min=10, help="Number of leads.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 7,
    start: Annotated[str, typer.Option(help="First lead creation date (UTC).")] = "2024-01-01",
    span_days: Annotated[int, typer.Option(help="Days over which leads are created; the export is at the end.")] = 540,
    drift: Annotated[float, typer.Option(min=0.0, max=1.0, help="How much the funnel changes over time (0 = none).")] = 0.0,
) -> None:
    """Write a seeded B2B funnel in the data contract's format (with the oracle's truth)."""
    from simulator.funnel import simulate as run_simulation
    from simulator.funnel import write_simulation

    sim = run_simulation(leads, seed, start=start, span_days=span_days, drift=drift, show_progress=True)
    write_simulation(sim, out)
    rate = sim.leads["converted_at"].notna().mean()
    typer.echo(
        f"wrote {len(sim.leads)} leads ({rate:.1%} converted by the export), "
        f"{len(sim.interactions)} interactions to {out}"
    )


DataOption = Annotated[Path, typer.Option(help="Folder with leads and interactions (CSV or Parquet).")]
GridOption = Annotated[Path | None, typer.Option(help="Point grid YAML scored beside the model. Default: training.grid of the config.")]


def _train_and_log(
    data: Path | None,
    config: Path | None,
    grid: Path | None,
    metrics_out: Path | None,
    bundle_out: Path | None,
    quarantine_out: Path | None,
    mlflow: bool,
    run_name: str | None,
    tolerance: float = 0.0,
    require_beats_grid: bool = False,
    allow_columns: list[str] | None = None,
    engine: Engine = Engine.local,
    scheduler: str | None = None,
) -> None:
    from tqdm import tqdm

    from training.leakage import guard_input_for_dataset
    from training.metrics import metrics_table
    from training.pipeline import NotEnoughDataError, run_training
    from training.tracking import write_metrics_json

    cfg = _load_config(config)
    if cfg.data is not None:
        project = _load_project_data(cfg, data, quarantine_out)
        if project.is_static:
            if engine is not Engine.local:
                raise _fail("--engine dask trains on leads and interactions; a static export (one row per lead) trains here")
            _train_static(project, cfg, grid, metrics_out, bundle_out, mlflow, run_name, allow_columns or [])
            return
        dataset, recorded, post_outcome = project.dataset, project.recorded_at, project.post_outcome
    else:
        data = data or DEFAULT_DATA_DIR
        dataset, recorded, post_outcome = _load_data(data, cfg, quarantine_out), None, []
    t = cfg.training
    leakage, spec = _leakage_guard(
        guard_input_for_dataset(dataset, cfg.features, t.horizon_days, t.test_fraction, t.snapshot_offsets_days, recorded, post_outcome),
        cfg,
        allow_columns or [],
    )
    point_grid = _grid_for(grid or cfg.training.grid, spec)
    # disable=None: a bar on a terminal only; a log (CI, cron) gets the step lines alone.
    with tqdm(total=5, desc="training", unit="step", leave=False, disable=None) as bar:

        def progress(message: str) -> None:
            bar.update(1)
            bar.write(f"  {message}")

        truth = _truth_for(data) if cfg.data is None and data is not None else None
        try:
            with _dask_engine(engine, scheduler) as dask:
                hooks = {} if dask is None else {"build_features": dask.snapshot_features, "fit_booster": dask.fit_booster}
                result = run_training(dataset, spec, cfg.training, point_grid, truth, progress, **hooks)
        except NotEnoughDataError as error:
            raise _fail(f"refusing to train: {error}") from error
    typer.echo(f"\nTest period from {result.split['test_start'][:10]}: {result.split['n_snapshots']['test']} snapshots")
    typer.echo(metrics_table(result.metrics))
    if metrics_out:
        write_metrics_json(result, metrics_out)
        typer.echo(f"metrics written to {metrics_out}")
    explanations = None
    if bundle_out or mlflow:
        from training.report import explain, inputs_from_training, write_bundle_files

        # Computed once: written into the bundle folder and logged with the MLflow run.
        explanations = explain(inputs_from_training(result))
        typer.echo(
            "learned grid ROC AUC on the test period: "
            f"{explanations.roc_auc['learned_grid']:.3f} (model {explanations.roc_auc['model']:.3f}, "
            f"your grid {explanations.roc_auc['point_grid']:.3f})"
        )
    if bundle_out and explanations is not None:
        result.model.save(bundle_out)
        write_bundle_files(explanations, bundle_out)
        typer.echo(f"bundle saved to {bundle_out} (with report.html, importance.json, learned_grid.yaml)")
    if mlflow:
        from training.tracking import log_training_run

        record = log_training_run(
            result,
            dataset,
            cfg,
            run_name=run_name,
            tolerance=tolerance,
            require_beats_grid=require_beats_grid,
            explanations=explanations,
            leakage=leakage,
        )
        typer.echo(f"MLflow run {record.run_id} ({cfg.registry.resolved_tracking_uri()})")
        typer.echo(f"registry: {cfg.registry.model_name} {record.decision}")


AllowColumnOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-column",
        help="Keep a column the leakage guard flagged (feature or source column name); repeatable. The run records it.",
    ),
]


@app.command()
def train(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Folder with leads and interactions (CSV or Parquet). With a config that has a data: section, "
            "a file read instead of data.leads.source. Default: the config's data: section, else data/sample."
        ),
    ] = None,
    config: ConfigOption = None,
    grid: GridOption = None,
    metrics_out: Annotated[Path | None, typer.Option(help="Write test metrics of every scorer as JSON here.")] = None,
    bundle_out: Annotated[Path | None, typer.Option(help="Also save the model bundle folder here.")] = None,
    quarantine_out: Annotated[Path | None, typer.Option(help="Where rows that break the data contract are written.")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Record the run and register the model in MLflow.")] = True,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    allow_column: AllowColumnOption = None,
    engine: EngineOption = Engine.local,
    scheduler: SchedulerOption = None,
) -> None:
    """Train on historical leads; compare with the point grid and a logistic regression.

    The leakage guard runs first; the columns it flags are left out unless --allow-column keeps
    them. The new model becomes `champion` only if it beats the current champion on the same
    test rows.
    """
    _train_and_log(
        data, config, grid, metrics_out, bundle_out, quarantine_out, mlflow, run_name,
        allow_columns=allow_column, engine=engine, scheduler=scheduler,
    )


@app.command()
def retrain(
    data: DataOption,
    config: ConfigOption = None,
    grid: GridOption = None,
    metrics_out: Annotated[Path | None, typer.Option(help="Write test metrics of every scorer as JSON here.")] = None,
    tolerance: Annotated[float | None, typer.Option(min=0.0, max=0.1, help="ROC AUC the challenger may lose to the champion and still be promoted. Default: training.lifecycle.RETRAIN_TOLERANCE (0.005).")] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = "retrain",
) -> None:
    """Train a challenger on the latest data; promote it only if it holds up against the champion and beats the grid.

    Challenger and champion are scored on the same most recent matured period; the decision and
    its figures go to MLflow (tags registry.decision, metric champion.roc_auc_same_test).
    """
    from training.lifecycle import RETRAIN_TOLERANCE

    tolerance = RETRAIN_TOLERANCE if tolerance is None else tolerance
    _train_and_log(data, config, grid, metrics_out, None, None, True, run_name, tolerance=tolerance, require_beats_grid=True)


@app.command()
def rollback(config: ConfigOption = None) -> None:
    """Move the `champion` alias back to the version the current champion replaced."""
    from model.registry import rollback_champion

    cfg = _load_config(config)
    try:
        old, new = rollback_champion(cfg.registry)
    except LookupError as error:
        raise _fail(str(error)) from error
    typer.echo(f"champion of '{cfg.registry.model_name}' moved back from v{old} to v{new}")


@app.command()
def backtest(
    data: DataOption,
    every: Annotated[str, typer.Option(help="Retrain every N days, e.g. 30d.")] = "30d",
    config: ConfigOption = None,
    grid: GridOption = None,
    start: Annotated[str | None, typer.Option(help="First retraining date (UTC). Default: halfway through the history.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the per-period table as CSV here.")] = None,
) -> None:
    """Replay history: retrain every period and compare with a never-retrained model and the grid."""
    import pandas as pd

    from training.lifecycle import backtest as run_backtest
    from training.pipeline import NotEnoughDataError

    if not every.endswith("d") or not every[:-1].isdigit() or int(every[:-1]) < 1:
        raise _fail(f"--every must look like 30d (whole days), got {every!r}")
    cfg = _load_config(config)
    dataset = _load_data(data, cfg, None)
    point_grid = _grid_for(grid or cfg.training.grid, cfg.features)
    try:
        table = run_backtest(
            dataset,
            cfg.features,
            cfg.training,
            point_grid,
            every_days=int(every[:-1]),
            first_cutoff=pd.Timestamp(start, tz="UTC") if start else None,
            progress=lambda message: typer.echo(f"  {message}"),
        )
    except NotEnoughDataError as error:
        raise _fail(str(error)) from error
    typer.echo(table.to_markdown(index=False, floatfmt=".3f"))
    means = table[["retrained_auc", "never_retrained_auc", "grid_auc"]].mean()
    typer.echo(
        f"mean AUC: retrained {means['retrained_auc']:.3f}, never retrained {means['never_retrained_auc']:.3f}, grid {means['grid_auc']:.3f}"
    )
    if out:
        table.to_csv(out, index=False)


@app.command()
def evaluate(
    data: Annotated[Path | None, typer.Option(help="Folder with leads and interactions. With a config that has a data: section, the leads export to read instead of the configured one (optional).")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder. Default: the registry's champion.")] = None,
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option(help="Only leads created at or after this date (UTC).")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="Write metrics JSON here.")] = None,
) -> None:
    """Score a trained model and its point grid on a data set's matured snapshots.

    A model trained on a static export (one row per lead, `leadscore train --config`) is scored
    on every row of the export the config reads (or `--data`): give it leads it was not trained on.
    """
    import pandas as pd

    from features.engine import snapshot_features
    from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
    from model.bundle import ScoringModel

    cfg = _load_config(config)
    model = ScoringModel.load(bundle) if bundle else _champion(cfg)
    if not model.spec.interactions:
        _evaluate_static(model, cfg, data, metrics_out)
        return
    if data is None:
        raise _fail("--data is required: the folder with the leads and interactions to evaluate on")
    dataset = _load_data(data, cfg.model_copy(update={"features": model.spec}), None)
    leads = dataset.leads
    if since:
        leads = leads[leads["created_at"] >= pd.Timestamp(since, tz="UTC")]
    horizon = model.meta.horizon_days
    snaps = snapshot_times(leads, cfg.training.snapshot_offsets_days, matured_label_cutoff(dataset.data_end, horizon))
    if snaps.empty:
        raise _fail("no snapshot with a matured label in this data")
    y = conversion_labels(snaps, dataset.leads, horizon)
    rows = snapshot_features(dataset.leads, dataset.interactions, snaps, model.spec)
    grid_points = model.meta.grid.score_frame(rows.to_frame(model.spec))
    scores = {"model": model.probability(model.encode(rows)), "point_grid": grid_points}
    truth = _truth_for(data)
    if truth is not None:
        scores["oracle"] = truth(snaps, horizon)
    typer.echo(f"{len(snaps)} snapshots, {int(y.sum())} conversions within {horizon:g} days")
    _echo_scorer_metrics(y, scores, cfg.training.n_bootstrap, metrics_out, groups=snaps["lead_id"].to_numpy())


def _evaluate_static(model, cfg, data: Path | None, metrics_out: Path | None) -> None:  # noqa: ANN001
    """`leadscore evaluate` for a model trained on a static export: every row, its exported outcome."""
    import numpy as np

    from features.engine import lead_attribute_rows

    if cfg.data is None:
        raise _fail(
            f"model {model.meta.model_version} was trained on a static export (one row per lead): "
            "evaluate it with the config that reads such an export (--config, with a data: section)"
        )
    project = _load_project_data(cfg.model_copy(update={"features": model.spec}), data, None)
    if not project.is_static:
        raise _fail(
            f"model {model.meta.model_version} was trained on a static export, and this config reads leads with "
            "interactions: evaluate it on an export of the same shape"
        )
    leads = project.dataset.leads
    y = leads["converted"].to_numpy().astype(np.int8)
    if y.min(initial=1) == y.max(initial=0):
        raise _fail(f"all {len(y)} rows have the same outcome: ROC AUC needs conversions and non-conversions")
    rows = lead_attribute_rows(leads, model.spec)
    points = model.meta.grid.score_frame(rows.to_frame(model.spec))
    scores = {"model": model.probability(model.encode(rows)), "point_grid": points}
    typer.echo(f"{len(y)} leads, {int(y.sum())} conversions (static export: outcomes as exported)")
    _echo_scorer_metrics(y, scores, cfg.training.n_bootstrap, metrics_out)
    typer.echo("(rows the model was trained on score better than new leads will: evaluate on a later export)")


def _echo_scorer_metrics(y, scores: dict, n_bootstrap: int, metrics_out: Path | None, groups=None) -> None:  # noqa: ANN001
    """`leadscore evaluate`'s table: each scorer's metrics on the same rows, printed and written as JSON."""
    import numpy as np

    from training.metrics import metrics_table, scorer_metrics

    results = {}
    for name, s in scores.items():
        # Grid points are not probabilities: rank metrics only, after a monotone squash.
        p = s if name != "point_grid" else 1 / (1 + np.exp(-(s - s.mean()) / (s.std() + 1e-9)))
        results[name] = scorer_metrics(y, p, n_bootstrap=n_bootstrap, groups=groups)
    typer.echo(metrics_table(results))
    typer.echo("(point_grid log_loss and brier use squashed points, not probabilities: compare its ranking metrics only)")
    if metrics_out:
        metrics_out.write_text(json.dumps(results, indent=2))


def _champion(cfg):  # noqa: ANN001, ANN202
    from model.bundle import ScoringModel
    from model.registry import champion_bundle_path

    try:
        path, _version = champion_bundle_path(cfg.registry)
    except LookupError as error:
        raise _fail(str(error)) from error
    return ScoringModel.load(path)


def _score_folder(
    data: Path, out: Path, model, cfg, when, *, reasons: bool, language: str, engine: Engine, scheduler: str | None,  # noqa: ANN001
    compiled: CompileMode,
) -> None:
    """`leadscore score` on a data folder: validated tables in, one row per lead out."""
    from datetime import UTC, datetime

    from model.scoring import score_table

    if out.suffix not in (".csv", ".parquet"):
        raise _fail(f"--out {out}: a data folder is scored to .csv or .parquet")
    dataset = _load_data(data, cfg.model_copy(update={"features": model.spec}), None)
    as_of = when or datetime.now(UTC)
    with _dask_engine(engine, scheduler) as dask:
        scorer = score_table if dask is None else dask.score_table
        table = scorer(model, dataset.leads, dataset.interactions, as_of, with_reasons=reasons, language=language,
                       compiled=compiled)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    later = len(dataset.leads) - len(table)
    typer.echo(f"scored {len(table)} leads to {out}" + (f"; {later} created after as_of not scored" if later else ""))


@app.command()
def score(
    input: Annotated[Path, typer.Option("--input", "-i", help="JSON lines, one lead per line as in POST /score's `lead`; or a data folder (leads + interactions tables), scored in batch.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output: .jsonl (full responses) or .csv (one row per lead); .csv or .parquet for a data folder.")],
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder. Default: the registry's champion.")] = None,
    config: ConfigOption = None,
    as_of: Annotated[str | None, typer.Option(help="Score as of this time (UTC). Default: now.")] = None,
    reasons: Annotated[bool, typer.Option("--reasons/--no-reasons", help="Include top reasons.")] = True,
    language: Annotated[str, typer.Option(help="Reason language: en or fr.")] = "en",
    engine: EngineOption = Engine.local,
    scheduler: SchedulerOption = None,
    compiled: Annotated[CompileMode, typer.Option(help="Data folder without reasons: predict with the forest compiled to machine code (same scores, several times faster). auto: when cached for this model and machine, or for 500,000 leads or more; always: compile now if needed (about 8 s, cached in .leadscore/compiled); never: LightGBM's predict.")] = CompileMode.auto,
) -> None:
    """Score a file of leads; a line that fails validation is reported with its number, not dropped.

    A data folder is validated like training data and scored in batch with vectorised features
    (the top reason per lead with --reasons): the way to score many leads.
    """
    from datetime import datetime

    import pandas as pd
    from pydantic import ValidationError
    from tqdm import tqdm

    from model.bundle import ScoringModel
    from model.scoring import LeadIn, score_lead

    cfg = _load_config(config)
    model = ScoringModel.load(bundle) if bundle else _champion(cfg)
    when = datetime.fromisoformat(as_of) if as_of else None
    if input.is_dir():
        _score_folder(input, out, model, cfg, when, reasons=reasons, language=language, engine=engine, scheduler=scheduler,
                      compiled=compiled)
        return
    if engine is not Engine.local:
        raise _fail("--engine dask scores a data folder; a JSON-lines file is scored here, lead by lead")
    results, errors = [], []
    lines = input.read_text().splitlines()
    for number, line in enumerate(tqdm(lines, desc="scoring", unit="lead", disable=None), start=1):
        if not line.strip():
            continue
        try:
            lead = LeadIn.model_validate_json(line)
            results.append(score_lead(model, lead, when, with_reasons=reasons, language=language).model_dump(mode="json"))
        except (ValidationError, ValueError) as error:
            errors.append({"line": number, "error": str(error).splitlines()[0:3]})
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        flat = [
            {k: r[k] for k in ("lead_id", "as_of", "probability", "score", "tier", "mql", "model_version")}
            | {"grid_points": r["point_grid"]["points"], "top_reason": (r["reasons"] or {}).get("up", [{}])[0].get("label") if r["reasons"] and r["reasons"]["up"] else None}
            for r in results
        ]
        pd.DataFrame(flat).to_csv(out, index=False)
    else:
        out.write_text("".join(json.dumps(r) + "\n" for r in results))
    typer.echo(f"scored {len(results)} leads to {out}")
    if errors:
        err_path = out.with_suffix(out.suffix + ".errors.json")
        err_path.write_text(json.dumps(errors, indent=2))
        typer.secho(f"{len(errors)} lines rejected (see {err_path}); first: line {errors[0]['line']}: {errors[0]['error'][0]}", fg=typer.colors.YELLOW)
        raise typer.Exit(code=1)


@app.command()
def report(
    bundle: Annotated[Path, typer.Option(help="Bundle folder of the model to report on.")],
    data: DataOption = Path("data/sample"),
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    config: ConfigOption = None,
) -> None:
    """Write the leadership report (one offline HTML file) for a bundle, on a data set's recent leads."""
    from model.bundle import ScoringModel
    from training.report import explain, inputs_from_dataset

    cfg = _load_config(config)
    try:
        model = ScoringModel.load(bundle)
    except (OSError, ValueError) as error:
        raise _fail(str(error)) from error
    if not model.spec.interactions:
        raise _fail(
            f"{bundle}: trained on a static export (one row per lead); the report reads leads over time "
            "(a test period of recent leads). Compare this model with your grid by `leadscore evaluate "
            "--config CONFIG --bundle BUNDLE`; its cross-validated figures are in the MLflow run"
        )
    dataset = _load_data(data, cfg.model_copy(update={"features": model.spec}), None)
    try:
        inputs = inputs_from_dataset(model, dataset, cfg.training.snapshot_offsets_days)
    except ValueError as error:
        raise _fail(str(error)) from error
    explanations = explain(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(explanations.html, encoding="utf-8")
    auc = explanations.roc_auc
    typer.echo(
        f"report written to {out} (ROC AUC on leads created from {inputs.test_start[:10]}: model "
        f"{auc['model']:.3f}, learned grid {auc['learned_grid']:.3f}, your grid {auc['point_grid']:.3f})"
    )


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    bundle: Annotated[Path | None, typer.Option(help="Serve this bundle folder instead of the registry's champion.")] = None,
) -> None:
    """Serve the scoring API (BentoML) with the champion model, or a bundle folder.

    Every endpoint but health and docs needs an API key (Authorization: Bearer KEY): set
    LEADSCORE_API_KEYS="KEY:score,KEY:admin" or LEADSCORE_API_KEYS_FILE; with neither, the
    service creates an admin key in .leadscore/api_key on first start. Other settings:
    LEADSCORE_POLL_SECONDS (follow the registry's champion, default 30, 0 = off),
    LEADSCORE_SCORE_LOG (record scores for `leadscore monitor`), LEADSCORE_MAX_BODY_BYTES.
    """
    env = dict(os.environ)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if bundle:
        env["LEADSCORE_BUNDLE"] = str(bundle.resolve())
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:LeadScoring", "--host", host, "--port", str(port)]
    typer.echo(f"serving on http://{host}:{port} (API page at /, OpenAPI document at /docs.json)")
    raise typer.Exit(subprocess.call(command, env=env))


ScoreLogOption = Annotated[
    str | None,
    typer.Option("--log", help="Score log: a JSON lines file or a SQLAlchemy URL. Default: $LEADSCORE_SCORE_LOG."),
]


def _score_log(target: str | None):  # noqa: ANN202
    from model.scorelog import SCORE_LOG_ENV, ScoreLogError, open_score_log

    target = target or os.environ.get(SCORE_LOG_ENV)
    if not target:
        raise _fail(f"no score log: pass --log, or set {SCORE_LOG_ENV} as for the service")
    if "://" not in target and not Path(target).is_file():
        raise _fail(f"score log {target}: no such file")
    try:
        return open_score_log(target)
    except ScoreLogError as error:
        raise _fail(str(error)) from error


def _since(text: str):  # noqa: ANN202
    """`7d`, `12h` (before now) or an ISO date/time (UTC when no zone) as a UTC datetime."""
    from datetime import UTC, datetime, timedelta

    units = {"d": "days", "h": "hours"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"--since must look like 7d, 12h or 2025-06-01, got {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@app.command()
def monitor(
    log: ScoreLogOption = None,
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder of the model to check. Default: the registry's champion.")] = None,
    since: Annotated[str, typer.Option(help="Scores logged since: 7d, 12h, or a date (UTC).")] = "7d",
    reference: Annotated[
        Path | None,
        typer.Option(help="Data folder to recompute the reference from, for a bundle saved without one (e.g. its training data)."),
    ] = None,
    config: ConfigOption = None,
    out: Annotated[Path | None, typer.Option(help="Also write the table as JSON here.")] = None,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help="Exit with 1 when a variable has drifted.")] = False,
) -> None:
    """Compare recent scores with the training data: PSI of every feature and of the probability.

    Reads the score log the service writes (LEADSCORE_SCORE_LOG), keeps the scores of the
    bundle's model version, and bins them like the training distribution stored in the bundle.
    PSI below 0.1: ok; 0.1 to 0.2: watch; 0.2 or more: drift.
    """
    import pandas as pd

    from model.bundle import ScoringModel
    from model.monitoring import MIN_ROWS, PROBABILITY, drift_table, reference_from_data
    from model.scorelog import ScoreLogError

    cfg = _load_config(config)
    try:
        model = ScoringModel.load(bundle) if bundle else _champion(cfg)
    except (OSError, ValueError) as error:
        raise _fail(str(error)) from error
    version = model.meta.model_version
    ref = model.meta.reference
    if reference is not None:
        dataset = _load_data(reference, cfg.model_copy(update={"features": model.spec}), None)
        try:
            ref = reference_from_data(model, dataset, cfg.training.snapshot_offsets_days)
        except ValueError as error:
            raise _fail(f"--reference {reference}: {error}") from error
    if ref is None:
        raise _fail(
            f"the bundle of model {version} has no reference distribution (saved before monitoring existed): "
            "pass --reference DATA_FOLDER, e.g. the data it was trained on"
        )
    store = _score_log(log)
    start = _since(since)
    try:
        rows, unreadable = store.read(since=start)
    except ScoreLogError as error:
        raise _fail(str(error)) from error
    if unreadable:
        typer.secho(f"{unreadable} records of {store.describe()} could not be read and are left out", fg=typer.colors.YELLOW)
    mine = rows[rows["model_version"] == version]
    others = rows.loc[rows["model_version"] != version, "model_version"].value_counts()
    if len(others):
        typer.echo(f"left out: {int(others.sum())} scores of other model versions ({', '.join(others.index[:5])})")
    if mine.empty:
        raise _fail(f"no score of model {version} in {store.describe()} since {start:%Y-%m-%d %H:%M} UTC")
    features = pd.DataFrame.from_records(mine["features"].tolist())
    table = drift_table(ref, features, mine["probability"].to_numpy(dtype=float))
    typer.echo(
        f"{len(mine)} scores of model {version} since {start:%Y-%m-%d %H:%M} UTC, against "
        f"{ref.n_features_rows} training snapshots (features) and {ref.n_probability_rows} validation snapshots (probability)"
    )
    if len(mine) < MIN_ROWS:
        typer.secho(f"only {len(mine)} scores: PSI is noisy below {MIN_ROWS}", fg=typer.colors.YELLOW)
    typer.echo(table.to_markdown(index=False, floatfmt=".4f"))
    drifted = table.loc[table["status"] == "drift", "variable"].tolist()
    watched = table.loc[table["status"] == "watch", "variable"].tolist()
    probability = table.loc[table["variable"] == PROBABILITY].iloc[0]
    typer.echo(
        f"probability PSI {probability['psi']:.3f} ({probability['status']}); drift: {len(drifted)} "
        f"{drifted[:10]}; watch: {len(watched)} {watched[:10]}"
    )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model_version": version, "since": start.isoformat(), "n_scores": len(mine),
                                   "variables": table.to_dict(orient="records")}, indent=2))  # fmt: skip
    if fail_on_drift and drifted:
        raise typer.Exit(code=1)


@app.command()
def forget(
    lead_id: Annotated[str, typer.Argument(help="The lead_id as the CRM sent it (often an email).")],
    log: ScoreLogOption = None,
) -> None:
    """Erase a lead from the score log (right to erasure) and say how many records went.

    The lead_id is hashed with the service's lead key (LEADSCORE_LEAD_KEY, else
    .leadscore/lead_key), as the service does when it logs; records with that hash are deleted.
    """
    from model.scorelog import ScoreLogError, lead_key, lead_pseudonym

    store = _score_log(log)
    try:
        pseudonym = lead_pseudonym(lead_id, lead_key(create=False))
        deleted = store.forget(pseudonym)
    except (ScoreLogError, ValueError) as error:
        raise _fail(str(error)) from error
    typer.echo(f"deleted {deleted} records of lead {pseudonym} from {store.describe()}")


if __name__ == "__main__":
    app()
