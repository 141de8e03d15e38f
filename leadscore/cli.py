"""The `leadscore` command line: one command per stage.

Each command parses its options and calls one function of the layers below (mostly
`training.workflow`); a `WorkflowError` becomes `error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from model.compiled import CompileMode

app = typer.Typer(
    help="Predictive lead scoring: simulate data, train LightGBM beside your point grid, "
    "track runs in MLflow, score leads, serve the API.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # Markdown: a docstring's paragraphs are rewrapped to the terminal, not cut at its own line ends.
    rich_markup_mode="markdown",
)

T = TypeVar("T")


class TerminalConsole:
    """`training.workflow.Console` on the terminal: lines on stdout, warnings in yellow."""

    def say(self, message: str) -> None:
        typer.echo(message)

    def warn(self, message: str) -> None:
        typer.secho(message, fg=typer.colors.YELLOW)


CONSOLE = TerminalConsole()


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(stage: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a workflow stage; its `WorkflowError` ends the command with exit code 2."""
    from training.workflow import WorkflowError

    try:
        return stage(*args, **kwargs)
    except WorkflowError as error:
        _fail(str(error))


@app.callback()
def _before_any_command() -> None:
    # OpenMP threads spin while they wait, by default: on a machine that other processes keep
    # busy, that made LightGBM training up to 28x slower (benchmarks/README.md). Set before
    # LightGBM loads; an OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class SimulationFormat(str, Enum):
    contract = "contract"
    hubspot = "hubspot"
    salesforce = "salesforce"


class Engine(str, Enum):
    local = "local"
    dask = "dask"


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Project config (YAML). Default: ./leadscore.yaml if present, else built-in defaults."),
]
EngineOption = Annotated[
    Engine,
    typer.Option(help="Where features, LightGBM and batch scoring run: this process, or a Dask cluster (docs/scale-out.md)."),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(help="Dask scheduler address, e.g. tcp://10.0.0.5:8786. Default with --engine dask: a LocalCluster on this machine."),
]
DataOption = Annotated[Path, typer.Option(help="Folder with leads and interactions (CSV or Parquet).")]
GridOption = Annotated[Path | None, typer.Option(help="Point grid YAML scored beside the model. Default: training.grid of the config.")]
MetricsOption = Annotated[Path | None, typer.Option(help="Write test metrics of every scorer as JSON here.")]
BundleOption = Annotated[Path | None, typer.Option(help="Bundle folder. Default: the registry's champion.")]
AllowColumnOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-column",
        help="Keep a column the leakage guard flagged (feature or source column name); repeatable. The run records it.",
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Promote the new model even when the promotion gate refuses it; the run records it (tag registry.forced).",
    ),
]
ScoreLogOption = Annotated[
    str | None,
    typer.Option("--log", help="Score log: a JSON lines file or a SQLAlchemy URL. Default: $LEADSCORE_SCORE_LOG."),
]


def _engine(engine: Engine, scheduler: str | None) -> Callable[[], AbstractContextManager[Any]]:
    """A factory of the engine context: None for this process, a `DaskEngine` for --engine dask."""
    if engine is Engine.local:
        if scheduler:
            _fail("--scheduler is for --engine dask")
        from training.workflow import local_engine

        return local_engine
    try:
        from scaleout.dask import dask_client
        from training.distributed import DaskEngine
    except ModuleNotFoundError as error:
        _fail(f"--engine dask needs Dask ({error.name} is not installed): pip install 'leadscore[dask]'")

    @contextmanager
    def on_dask() -> Iterator[DaskEngine]:
        with dask_client(scheduler) as client:
            dask = DaskEngine(client)
            typer.echo(f"dask: {dask.n_workers} workers at {scheduler or 'a LocalCluster on this machine'}")
            yield dask

    return on_dask


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write leads.csv, interactions.csv, truth.csv, meta.json.")],
    leads: Annotated[int, typer.Option("--leads", min=10, help="Number of leads.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 7,
    start: Annotated[str, typer.Option(help="First lead creation date (UTC).")] = "2024-01-01",
    span_days: Annotated[int, typer.Option(help="Days over which leads are created; the export is at the end.")] = 540,
    drift: Annotated[float, typer.Option(min=0.0, max=1.0, help="How much the funnel changes over time (0 = none).")] = 0.0,
    format: Annotated[SimulationFormat, typer.Option("--format", help="contract: leads.csv and interactions.csv (with truth.csv); hubspot or salesforce: the same funnel as that CRM exports it (examples/hubspot.yaml, examples/salesforce.yaml read it).")] = SimulationFormat.contract,
) -> None:
    """Write a seeded B2B funnel in the data contract's format (with the oracle's truth), or as a HubSpot or Salesforce export."""
    from simulator.crm import write_export
    from simulator.funnel import simulate as run_simulation

    sim = run_simulation(leads, seed, start=start, span_days=span_days, drift=drift, show_progress=True)
    write_export(sim, out, format.value)
    rate = sim.leads["converted_at"].notna().mean()
    typer.echo(
        f"wrote {len(sim.leads)} leads ({rate:.1%} converted by the export), "
        f"{len(sim.interactions)} interactions to {out}"
    )


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
    metrics_out: MetricsOption = None,
    bundle_out: Annotated[Path | None, typer.Option(help="Also save the model bundle folder here.")] = None,
    quarantine_out: Annotated[Path | None, typer.Option(help="Where rows that break the data contract are written.")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Record the run and register the model in MLflow.")] = True,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    allow_column: AllowColumnOption = None,
    engine: EngineOption = Engine.local,
    scheduler: SchedulerOption = None,
    force: ForceOption = False,
) -> None:
    """Train on historical leads; compare with the point grid and a logistic regression.

    The leakage guard runs first; the columns it flags are left out unless --allow-column keeps
    them. The new model becomes `champion` only if the promotion gate lets it through on its
    test rows: above chance, not below the grid or the logistic regression, better than the
    current champion re-scored on the same rows.
    """
    from training.workflow import TrainRequest
    from training.workflow import train as run_train

    request = TrainRequest(
        data=data, config=config, grid=grid, metrics_out=metrics_out, bundle_out=bundle_out,
        quarantine_out=quarantine_out, mlflow=mlflow, run_name=run_name, allow_columns=allow_column or [],
        engine=_engine(engine, scheduler), on_dask=engine is Engine.dask, force=force,
    )  # fmt: skip
    _run(run_train, request, CONSOLE)


@app.command()
def retrain(
    data: DataOption,
    config: ConfigOption = None,
    grid: GridOption = None,
    metrics_out: MetricsOption = None,
    tolerance: Annotated[float | None, typer.Option(min=0.0, max=0.1, help="ROC AUC the challenger may lose to the champion and still be promoted. Default: training.lifecycle.RETRAIN_TOLERANCE (0.005).")] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = "retrain",
    force: ForceOption = False,
) -> None:
    """Train a challenger on the latest data; promote it only if it holds up against the champion and beats the grid.

    Challenger and champion are scored on the same most recent matured period; the decision and
    its figures go to MLflow (tags registry.decision, metric champion.roc_auc_same_test).
    """
    from training.lifecycle import RETRAIN_TOLERANCE
    from training.workflow import TrainRequest
    from training.workflow import train as run_train

    request = TrainRequest(
        data=data, config=config, grid=grid, metrics_out=metrics_out, run_name=run_name,
        tolerance=RETRAIN_TOLERANCE if tolerance is None else tolerance, force=force,
    )  # fmt: skip
    _run(run_train, request, CONSOLE)


@app.command()
def rollback(config: ConfigOption = None) -> None:
    """Move the `champion` alias back to the version the current champion replaced."""
    from model.registry import RegistryError, rollback_champion
    from training.workflow import read_config

    cfg = _run(read_config, config)
    try:
        old, new = rollback_champion(cfg.registry)
    except (LookupError, RegistryError) as error:
        _fail(str(error))
    typer.echo(f"champion of '{cfg.registry.model_name}' moved back from v{old} to v{new}")


@app.command()
def backtest(
    data: Annotated[Path | None, typer.Option(help="Folder with leads and interactions. With a config that has a data: section, a leads file read instead of data.leads.source. Default: the config's data: section, else data/sample.")] = None,
    every: Annotated[str, typer.Option(help="Retrain every N days, e.g. 30d.")] = "30d",
    config: ConfigOption = None,
    grid: GridOption = None,
    start: Annotated[str | None, typer.Option(help="First retraining date (UTC). Default: halfway through the history.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the per-period table as CSV here.")] = None,
) -> None:
    """Replay history: retrain every period and compare with a never-retrained model and the grid."""
    from training.workflow import backtest as run_backtest

    _run(run_backtest, data, every, config, grid, start, out, CONSOLE)


@app.command()
def evaluate(
    data: Annotated[Path | None, typer.Option(help="Folder with leads and interactions. With a config that has a data: section, the leads export to read instead of the configured one (optional).")] = None,
    bundle: BundleOption = None,
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option(help="Only leads created at or after this: a date (UTC when no zone), or 30d, 12h before now.")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="Write metrics JSON here.")] = None,
) -> None:
    """Score a trained model and its point grid on a data set's matured snapshots.

    A model trained on a static export (one row per lead, `leadscore train --config`) is scored
    on every row of the export the config reads (or `--data`): give it leads it was not trained on.
    """
    from training.workflow import evaluate as run_evaluate

    _run(run_evaluate, data, bundle, config, since, metrics_out, CONSOLE)


@app.command()
def score(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output: .jsonl (full responses) or .csv (one row per lead); .csv or .parquet for a data folder.")],
    input: Annotated[Path | None, typer.Option("--input", "-i", help="JSON lines, one lead per line as in POST /score's `lead`; or a data folder (leads + interactions tables), scored in batch; a folder of parts (leadscore prepare) is scored one part at a time. Default: the config's data: section, scored in batch.")] = None,
    bundle: BundleOption = None,
    config: ConfigOption = None,
    as_of: Annotated[str | None, typer.Option(help="Score as of this time: ISO 8601 (no zone means UTC), from 1970 to now, as the service's as_of. Default: now.")] = None,
    reasons: Annotated[bool, typer.Option("--reasons/--no-reasons", help="Include top reasons.")] = True,
    top_reasons: Annotated[int, typer.Option(min=1, help="Data folder with --reasons: reasons up per lead, strongest first: top_reason, then the columns reason_2 .. reason_N.")] = 1,
    language: Annotated[str, typer.Option(help="Reason language: en or fr.")] = "en",
    engine: EngineOption = Engine.local,
    scheduler: SchedulerOption = None,
    compiled: Annotated[CompileMode, typer.Option(help="Without reasons (a data folder or JSON lines): predict with the forest compiled to machine code (same scores, several times faster). auto: when cached for this model and machine, or when the batch (a data folder, or the whole JSON-lines file) has 500,000 rows for the forest to predict (with a trend, its two past instants a lead: about 250,000 leads); always: compile now if needed (about 8 s, cached in .leadscore/compiled); never: LightGBM's predict.")] = CompileMode.auto,
) -> None:
    """Score a file of leads; a line that fails validation is reported with its number, not dropped.

    A data folder is validated like training data and scored in batch with vectorised features
    (the top reason per lead with --reasons): the way to score many leads.

    A folder of parts (leads/part-*.parquet and interactions/part-*.parquet, each lead's
    interactions in its own part, as `leadscore prepare` writes them) is streamed: each part is
    read, validated, scored and appended to --out before the next one, so memory is bounded by
    the largest part, not by the data. The validation report and the quarantine file cover
    every part, as for a flat folder.

    Memory the scoring frees stays with the process for the next batch or part
    (`model.memory`); LEADSCORE_KEEP_FREED_MEMORY=0 returns it to the system instead.
    """
    from model.memory import keep_freed_memory
    from model.scoring import read_as_of
    from training.workflow import load_model, read_config, score_folder, score_lines

    keep_freed_memory()

    try:
        when = read_as_of(as_of) if as_of else None
    except ValueError as error:
        _fail(f"--as-of {as_of!r}: {error}")
    cfg = _run(read_config, config)
    model = _run(load_model, bundle, cfg)
    if input is None or input.is_dir():
        from model.accounts import load_account_model

        # A bundle folder with an account model also scores the accounts (a file beside --out).
        account_model = _run(load_account_model, bundle) if bundle is not None else None
        _run(score_folder, input, out, model, when, reasons=reasons, top_reasons=top_reasons, language=language,
             engine=_engine(engine, scheduler), compiled=compiled, console=CONSOLE,
             cfg=cfg if input is None else None, account_model=account_model)  # fmt: skip
        return
    if engine is not Engine.local:
        _fail("--engine dask scores a data folder; a JSON-lines file is scored here, lead by lead")
    if _run(score_lines, input, out, model, when, reasons=reasons, language=language, console=CONSOLE, compiled=compiled):
        raise typer.Exit(code=1)


@app.command()
def prepare(
    input: Annotated[Path, typer.Option("--input", "-i", help="A flat data folder: leads and interactions as .parquet, .csv or .csv.gz (docs/byo-data.md).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The folder of parts to write (leads/, interactions/, meta.json); must not hold parts yet.")],
    parts: Annotated[int | None, typer.Option(min=1, help="How many parts. Default: one per 200,000 leads.")] = None,
) -> None:
    """Cut a data folder too big for memory into parts by lead id, for `leadscore score` to stream.

    Rows are read in batches and moved to the part of a hash of their lead id, so every
    interaction lands in its lead's part; nothing is judged or dropped here (a bad row is
    reported when `score` validates its part). Memory stays at a few million rows.
    """
    from training.streaming import prepare_folder

    _run(prepare_folder, input, out, parts, CONSOLE)


@app.command()
def report(
    bundle: Annotated[Path, typer.Option(help="Bundle folder of the model to report on.")],
    data: Annotated[Path | None, typer.Option(help="Folder with leads and interactions. With a config that has a data: section, a leads file read instead of data.leads.source. Default: the config's data: section, else data/sample.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    config: ConfigOption = None,
) -> None:
    """Write the leadership report (one offline HTML file) for a bundle, on a data set's recent leads."""
    from training.workflow import write_report

    _run(write_report, bundle, data, out, config, CONSOLE)


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
    SIGTERM or SIGINT stops the whole BentoML process tree.

    The bundle is loaded and checked in a child process first: without a champion, or with a
    bundle that cannot serve, this ends with one line (exit code 2) instead of a server whose
    worker restarts forever. BentoML runs with a home of its own per address
    (`BENTOML_HOME=STATE_FOLDER/bentoml/HOST-PORT`), so that each service keeps its own
    Prometheus folder: BentoML empties that folder when a service starts.
    """
    from model.settings import env_name
    from model.state import state_dir

    env = dict(os.environ)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if bundle:
        env[env_name("bundle")] = str(bundle.resolve())
    _check_bundle_to_serve(bundle.resolve() if bundle else None)
    env["BENTOML_HOME"] = str((state_dir() / "bentoml" / f"{host}-{port}").resolve())
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:LeadScoring", "--host", host, "--port", str(port)]
    typer.echo(f"serving on http://{host}:{port} (API page at /, OpenAPI document at /docs.json)")
    raise typer.Exit(_run_process_group(command, env))


def _check_bundle_to_serve(bundle: Path | None) -> None:
    """Check the bundle `serve` starts with (`bundle`, else where the service finds one) in a child
    process; fail with one line when there is none or it cannot serve."""
    from model.check import BundleInvalid, check_in_child
    from serving.service import BundleLoadError, bundle_location

    if bundle is None:
        try:
            bundle, origin, _version = bundle_location()
        except BundleLoadError as error:
            _fail(str(error))
    else:
        origin = "--bundle"
    try:
        notes = check_in_child(bundle)
    except BundleInvalid as error:
        _fail(f"the model bundle at {bundle} (from {origin}) cannot serve: {error}")
    for note in notes:
        CONSOLE.warn(note)


def _run_process_group(command: list[str], env: dict[str, str]) -> int:
    """Run `command` in its own process group; SIGTERM/SIGINT here end that whole group."""
    child = subprocess.Popen(command, env=env, start_new_session=True)

    def stop(signum: int, _frame: FrameType | None) -> None:
        with suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    return child.wait()


@app.command()
def monitor(
    log: ScoreLogOption = None,
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder of the model to check. Default: the registry's champion.")] = None,
    since: Annotated[str, typer.Option(help="Scores logged since: 7d, 12h, or a date (UTC).")] = "7d",
    reference: Annotated[Path | None, typer.Option(help="Data folder to recompute the reference from, for a bundle saved without one (e.g. its training data).")] = None,
    config: ConfigOption = None,
    out: Annotated[Path | None, typer.Option(help="Also write the table as JSON here.")] = None,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help="Exit with 1 when a variable has drifted.")] = False,
) -> None:
    """Compare recent scores with the training data: PSI of every feature and of the probability.

    Reads the score log the service writes (LEADSCORE_SCORE_LOG), keeps the scores of the
    bundle's model version, and bins them like the training distribution stored in the bundle.
    PSI below 0.1: ok; 0.1 to 0.2: watch; 0.2 or more: drift.
    """
    from training.workflow import monitor as run_monitor

    drifted = _run(run_monitor, log, bundle, since, reference, config, out, CONSOLE)
    if fail_on_drift and drifted:
        raise typer.Exit(code=1)


@app.command()
def forget(
    lead_id: Annotated[str, typer.Argument(help="The lead_id as the CRM sent it (often an email).")],
    log: ScoreLogOption = None,
    lead_store: Annotated[
        str | None,
        typer.Option(help="Lead store (a SQLAlchemy URL). Default: $LEADSCORE_LEAD_STORE, else .leadscore/leads.db when it exists."),
    ] = None,
) -> None:
    """Erase a lead from the score log and the lead store (right to erasure) and say how many records went.

    For the score log, the lead_id is hashed with the service's lead key (LEADSCORE_LEAD_KEY, else
    .leadscore/lead_key), as the service does when it logs; records with that hash are deleted.
    The lead store's rows of the lead (attributes, interactions, last score, queued alerts) are deleted.
    """
    from training.workflow import forget as run_forget

    _run(run_forget, lead_id, log, CONSOLE, lead_store=lead_store)
