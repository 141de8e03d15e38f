"""The `leadscore` command line: one command per stage.

Everything that touches files, MLflow or the terminal lives here; the stages it calls are pure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

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


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _load_config(path: Path | None):  # noqa: ANN202
    from leadscore.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as error:
        raise _fail(str(error)) from error


def _load_data(data: Path, config, quarantine_out: Path | None):  # noqa: ANN001, ANN202
    from features.contract import ContractError, load_dataset

    try:
        dataset = load_dataset(data, config.features)
    except ContractError as error:
        raise _fail(str(error)) from error
    typer.echo(f"data: {len(dataset.leads)} leads, {len(dataset.interactions)} interactions from {data}")
    for line in dataset.report.lines():
        typer.secho(f"  {line}", fg=typer.colors.YELLOW)
    if len(dataset.quarantine):
        target = quarantine_out or Path(".leadscore") / "quarantine.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset.quarantine.to_csv(target, index=False)
        typer.secho(f"  {len(dataset.quarantine)} rows set aside in {target}", fg=typer.colors.YELLOW)
    return dataset


def _truth_for(data: Path):  # noqa: ANN202
    """The oracle for simulated data (truth.csv beside the tables), else None."""
    truth_path = data / "truth.csv"
    if not truth_path.exists():
        return None
    from leadscore.simulator import read_truth, true_conversion_probability

    truth = read_truth(truth_path)

    def oracle(snapshots, horizon):  # noqa: ANN001, ANN202
        return true_conversion_probability(truth, snapshots["lead_id"].to_numpy(), snapshots["as_of"], horizon)

    return oracle


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
    from leadscore.simulator import simulate as run_simulation
    from leadscore.simulator import write_simulation

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
    data: Path,
    config: Path | None,
    grid: Path | None,
    metrics_out: Path | None,
    bundle_out: Path | None,
    quarantine_out: Path | None,
    mlflow: bool,
    run_name: str | None,
    tolerance: float = 0.0,
    require_beats_grid: bool = False,
) -> None:
    from tqdm import tqdm

    from features.grid import load_grid
    from training.metrics import metrics_table
    from training.pipeline import NotEnoughDataError, run_training
    from training.tracking import write_metrics_json

    cfg = _load_config(config)
    dataset = _load_data(data, cfg, quarantine_out)
    try:
        point_grid = load_grid(grid or cfg.training.grid)
    except (OSError, ValueError) as error:
        raise _fail(str(error)) from error
    with tqdm(total=5, desc="training", unit="step", leave=False) as bar:

        def progress(message: str) -> None:
            bar.update(1)
            bar.write(f"  {message}")

        try:
            result = run_training(dataset, cfg.features, cfg.training, point_grid, _truth_for(data), progress)
        except NotEnoughDataError as error:
            raise _fail(f"refusing to train: {error}") from error
    typer.echo(f"\nTest period from {result.split['test_start'][:10]}: {result.split['n_snapshots']['test']} snapshots")
    typer.echo(metrics_table(result.metrics))
    if metrics_out:
        write_metrics_json(result, metrics_out)
        typer.echo(f"metrics written to {metrics_out}")
    if bundle_out:
        result.model.save(bundle_out)
        typer.echo(f"bundle saved to {bundle_out}")
    if mlflow:
        from training.tracking import log_training_run

        record = log_training_run(
            result, dataset, cfg, run_name=run_name, tolerance=tolerance, require_beats_grid=require_beats_grid
        )
        typer.echo(f"MLflow run {record.run_id} ({cfg.registry.resolved_tracking_uri()})")
        typer.echo(f"registry: {cfg.registry.model_name} {record.decision}")


@app.command()
def train(
    data: DataOption = Path("data/sample"),
    config: ConfigOption = None,
    grid: GridOption = None,
    metrics_out: Annotated[Path | None, typer.Option(help="Write test metrics of every scorer as JSON here.")] = None,
    bundle_out: Annotated[Path | None, typer.Option(help="Also save the model bundle folder here.")] = None,
    quarantine_out: Annotated[Path | None, typer.Option(help="Where rows that break the data contract are written.")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Record the run and register the model in MLflow.")] = True,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
) -> None:
    """Train on historical leads; compare with the point grid and a logistic regression.

    The new model becomes `champion` only if it beats the current champion on the same test rows.
    """
    _train_and_log(data, config, grid, metrics_out, bundle_out, quarantine_out, mlflow, run_name)


@app.command()
def retrain(
    data: DataOption,
    config: ConfigOption = None,
    grid: GridOption = None,
    metrics_out: Annotated[Path | None, typer.Option(help="Write test metrics of every scorer as JSON here.")] = None,
    tolerance: Annotated[float, typer.Option(min=0.0, max=0.1, help="ROC AUC the challenger may lose to the champion and still be promoted.")] = 0.005,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = "retrain",
) -> None:
    """Train a challenger on the latest data; promote it only if it holds up against the champion and beats the grid.

    Challenger and champion are scored on the same most recent matured period; the decision and
    its figures go to MLflow (tags registry.decision, metric champion.roc_auc_same_test).
    """
    _train_and_log(data, config, grid, metrics_out, None, None, True, run_name, tolerance=tolerance, require_beats_grid=True)


@app.command()
def rollback(config: ConfigOption = None) -> None:
    """Move the `champion` alias back to the version the current champion replaced."""
    from leadscore.registry import rollback_champion

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

    from features.grid import load_grid
    from training.lifecycle import backtest as run_backtest
    from training.pipeline import NotEnoughDataError

    if not every.endswith("d") or not every[:-1].isdigit() or int(every[:-1]) < 1:
        raise _fail(f"--every must look like 30d (whole days), got {every!r}")
    cfg = _load_config(config)
    dataset = _load_data(data, cfg, None)
    point_grid = load_grid(grid or cfg.training.grid)
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
    data: Annotated[Path, typer.Option(help="Folder with leads and interactions.")],
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder. Default: the registry's champion.")] = None,
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option(help="Only leads created at or after this date (UTC).")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="Write metrics JSON here.")] = None,
) -> None:
    """Score a trained model and its point grid on a data set's matured snapshots."""
    import numpy as np
    import pandas as pd

    from features.engine import snapshot_features
    from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
    from leadscore.bundle import ScoringModel
    from training.metrics import metrics_table, scorer_metrics

    cfg = _load_config(config)
    model = ScoringModel.load(bundle) if bundle else _champion(cfg)
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
    groups = snaps["lead_id"].to_numpy()
    results = {}
    for name, s in scores.items():
        # Grid points are not probabilities: rank metrics only, after a monotone squash.
        p = s if name != "point_grid" else 1 / (1 + np.exp(-(s - s.mean()) / (s.std() + 1e-9)))
        results[name] = scorer_metrics(y, p, n_bootstrap=cfg.training.n_bootstrap, groups=groups)
    typer.echo(f"{len(snaps)} snapshots, {int(y.sum())} conversions within {horizon:g} days")
    typer.echo(metrics_table(results))
    typer.echo("(point_grid log_loss and brier use squashed points, not probabilities: compare its ranking metrics only)")
    if metrics_out:
        metrics_out.write_text(json.dumps(results, indent=2))


def _champion(cfg):  # noqa: ANN001, ANN202
    from leadscore.bundle import ScoringModel
    from leadscore.registry import champion_bundle_path

    try:
        path, _version = champion_bundle_path(cfg.registry)
    except LookupError as error:
        raise _fail(str(error)) from error
    return ScoringModel.load(path)


@app.command()
def score(
    input: Annotated[Path, typer.Option("--input", "-i", help="JSON lines, one lead per line as in POST /score's `lead`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output: .jsonl (full responses) or .csv (one row per lead).")],
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder. Default: the registry's champion.")] = None,
    config: ConfigOption = None,
    as_of: Annotated[str | None, typer.Option(help="Score as of this time (UTC). Default: now.")] = None,
    reasons: Annotated[bool, typer.Option("--reasons/--no-reasons", help="Include top reasons.")] = True,
    language: Annotated[str, typer.Option(help="Reason language: en or fr.")] = "en",
) -> None:
    """Score a file of leads; a line that fails validation is reported with its number, not dropped."""
    from datetime import datetime

    import pandas as pd
    from pydantic import ValidationError
    from tqdm import tqdm

    from leadscore.bundle import ScoringModel
    from leadscore.scoring import LeadIn, score_lead

    cfg = _load_config(config)
    model = ScoringModel.load(bundle) if bundle else _champion(cfg)
    when = datetime.fromisoformat(as_of) if as_of else None
    results, errors = [], []
    lines = input.read_text().splitlines()
    for number, line in enumerate(tqdm(lines, desc="scoring", unit="lead"), start=1):
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
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    bundle: Annotated[Path | None, typer.Option(help="Serve this bundle folder instead of the registry's champion.")] = None,
) -> None:
    """Serve the scoring API (BentoML) with the champion model, or a bundle folder."""
    env = dict(os.environ)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if bundle:
        env["LEADSCORE_BUNDLE"] = str(bundle.resolve())
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:LeadScoring", "--host", host, "--port", str(port)]
    typer.echo(f"serving on http://{host}:{port} (docs at /docs)")
    raise typer.Exit(subprocess.call(command, env=env))


if __name__ == "__main__":
    app()
