"""The leadership report: one self-contained HTML page on what the model adds to the grid.

Everything is computed on the test period, the most recent leads, which the model never saw:

- a headline in plain words: how many more conversions sales reaches by working the model's
  top 20 % of leads rather than the grid's top 20 %;
- gains and lift curves (model, handwritten grid, learned grid, random), the calibration curve
  and the conversion rate per tier;
- the top drivers with their directions (`training.drivers`);
- the handwritten grid beside the grid learned from the model (`training.learned_grid`).

Charts are inline SVG drawn by matplotlib, so the file reads offline with no server and no CDN.
Training writes it into the bundle folder as `report.html`, beside `importance.json` (the
drivers) and `learned_grid.yaml`; serving hands those files out as they are.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
from markupsafe import Markup

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from features.contract import Dataset
from features.engine import FeatureRows, snapshot_features
from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
from model.bundle import IMPORTANCE_FILE, REPORT_FILE, ScoringModel
from sources.grids import save_grid
from training.drivers import driver_contributions, global_drivers
from training.learned_grid import LearnedGrid, compare_with_grid, learn_grid, sample_rows
from training.metrics import CAPTURE_TOP_SHARE, gains_curve, lift_curve
from training.pipeline import TrainingResult
from training.report_accounts import AccountSection, accounts_chart
from training.report_segments import cell_table, cells_chart, trend_table
from training.report_when import SCORER_NAMES as WHEN_SCORERS
from training.report_when import WhenSection, when_auc_chart, when_curve_chart, when_section
from training.trend import snapshot_trends

LEARNED_GRID_FILE = "learned_grid.yaml"
TOP_DRIVERS = 10
# At most this many test rows are explained (TreeSHAP costs about a millisecond per row).
MAX_EXPLAINED_ROWS = 20_000
CURVE_POINTS = 500  # points drawn per gains or lift curve

COLOURS = {"model": "#1f6fb4", "learned_grid": "#e08a00", "point_grid": "#c0392b", "random": "#7f7f7f"}
NAMES = {"model": "Model", "learned_grid": "Learned grid", "point_grid": "Your grid", "random": "Random order"}


@dataclass(frozen=True)
class ReportInputs:
    """What the report is computed from.

    Attributes:
        model: The trained model.
        test_rows, test_matrix, test_y, test_lead_ids: The test period's snapshots.
        fit_rows, fit_matrix, fit_y: Snapshots before the test period (the learned grid is
            derived from them, never from the test rows it is judged on).
        test_start: First creation time of a test-period lead (ISO).
        data: Data window: first_created_at, last_created_at, data_end (ISO).
        served_through: The served model learned from snapshots up to this time (ISO), when it
            was refit after the test period measured the method (`training.refit`).
        test_trend: Each test snapshot's trend label or None (`training.trend.snapshot_trends`);
            None when the model has no trend thresholds.
        accounts: The account model on its test accounts beside the roll-ups
            (`training.report_accounts.account_section`); None without an account model.
        when: The timing model's test-period figures (`training.report_when.when_section`);
            None: read from the model's hazard when it has one.
    """

    model: ScoringModel
    test_rows: FeatureRows
    test_matrix: np.ndarray
    test_y: np.ndarray
    test_lead_ids: np.ndarray
    fit_rows: FeatureRows
    fit_matrix: np.ndarray
    fit_y: np.ndarray
    test_start: str
    data: dict[str, str]
    served_through: str | None = None
    test_trend: np.ndarray | None = None
    accounts: AccountSection | None = None
    when: WhenSection | None = None


def _concat_rows(parts: Sequence[FeatureRows]) -> FeatureRows:
    return FeatureRows(
        categorical={k: np.concatenate([p.categorical[k] for p in parts]) for k in parts[0].categorical},
        numeric={k: np.concatenate([p.numeric[k] for p in parts]) for k in parts[0].numeric},
    )


def inputs_from_training(result: TrainingResult) -> ReportInputs:
    """Report inputs from a training run: its test period, and train + validation to fit on."""
    data = result.model.meta.training["data"]
    return ReportInputs(
        model=result.model,
        test_rows=result.test.rows,
        test_matrix=result.test.matrix,
        test_y=result.test.y,
        test_lead_ids=result.test.snapshots["lead_id"].to_numpy(),
        fit_rows=_concat_rows([result.train.rows, result.valid.rows]),
        fit_matrix=np.vstack([result.train.matrix, result.valid.matrix]),
        fit_y=np.concatenate([result.train.y, result.valid.y]),
        test_start=str(result.split["test_start"]),
        test_trend=result.test_trend,
        data={k: str(data[k]) for k in ("first_created_at", "last_created_at", "data_end")},
    )


def inputs_from_dataset(model: ScoringModel, data: Dataset, offsets_days: Sequence[float]) -> ReportInputs:
    """Report inputs from a bundle and a data set (`leadscore report`).

    Leads created at or after the bundle's test start are the test period; matured snapshots
    of earlier leads are what the learned grid is fitted on.

    Raises:
        ValueError: The bundle records no test start, or a period has no matured snapshot.
    """
    split = model.meta.training.get("split")
    if not isinstance(split, dict) or "test_start" not in split:
        raise ValueError(f"bundle {model.meta.model_version}: bundle.json has no training.split.test_start")
    test_start = pd.Timestamp(split["test_start"])
    served = model.meta.training.get("served") or {}
    if "labels_through" in served:
        # A served model learned from every label up to its data end: only later leads are new to it.
        test_start = max(test_start, pd.Timestamp(served["labels_through"]))
    horizon = model.meta.horizon_days
    snaps = snapshot_times(data.leads, offsets_days, matured_label_cutoff(data.data_end, horizon))
    snaps["label"] = conversion_labels(snaps, data.leads, horizon)
    created = data.leads.set_index("lead_id")["created_at"]
    in_test = (created.reindex(snaps["lead_id"]).to_numpy() >= test_start)
    parts = {}
    unseen = f"test (leads created from {test_start:%Y-%m-%d}, which the model never saw)"
    for name, keep in ((unseen, in_test), ("before the test period", ~in_test)):
        part = snaps[keep].reset_index(drop=True)
        if part.empty or part["label"].nunique() < 2:
            raise ValueError(
                f"{name}: {len(part)} snapshots with a matured {horizon:g}-day label and "
                f"{int(part['label'].sum()) if len(part) else 0} conversions; the report needs both "
                "converted and unconverted leads"
            )
        rows = snapshot_features(data.leads, data.interactions, part, model.spec)
        parts[name] = (part, rows, model.encode(rows))
    (test, test_rows, test_matrix), (fit, fit_rows, fit_matrix) = parts[unseen], parts["before the test period"]
    return ReportInputs(
        model=model,
        test_rows=test_rows,
        test_matrix=test_matrix,
        test_y=test["label"].to_numpy(),
        test_lead_ids=test["lead_id"].to_numpy(),
        fit_rows=fit_rows,
        fit_matrix=fit_matrix,
        fit_y=fit["label"].to_numpy(),
        test_start=test_start.isoformat(),
        served_through=served.get("trained_through"),
        test_trend=snapshot_trends(model, data, test, test_matrix),
        data={
            "first_created_at": data.leads["created_at"].min().isoformat(),
            "last_created_at": data.leads["created_at"].max().isoformat(),
            "data_end": data.data_end.isoformat(),
        },
    )


@dataclass(frozen=True)
class Explanations:
    """Everything the report shows, computed once (files for the bundle, numbers for MLflow).

    Attributes:
        drivers: The global drivers (importance.json).
        learned: The grid learned from the model.
        comparison: Handwritten rule -> what the data says (`compare_with_grid`).
        scores: Test-period scores: model probability, handwritten and learned grid points.
        roc_auc: ROC AUC of each of those on the test period.
        html: The report.
    """

    drivers: dict[str, Any]
    learned: LearnedGrid
    comparison: list[dict[str, Any]]
    scores: dict[str, np.ndarray]
    roc_auc: dict[str, float]
    html: str


def explain(inputs: ReportInputs, generated_at: datetime | None = None) -> Explanations:
    """Compute drivers, the learned grid, the comparison and the report from `inputs`."""
    model = inputs.model
    spec = model.spec
    test_rows, test_matrix, test_y = sample_rows(inputs.test_rows, inputs.test_matrix, inputs.test_y, MAX_EXPLAINED_ROWS)
    n_leads = int(pd.unique(inputs.test_lead_ids).size)
    period = {
        "name": "test",
        "from": inputs.test_start,
        "to": inputs.data["data_end"],
        "n_snapshots": int(len(inputs.test_y)),
        "n_leads": n_leads,
    }
    drivers = global_drivers(model, test_rows, test_matrix, test_y, period=period)

    fit_rows, fit_matrix, fit_y = sample_rows(inputs.fit_rows, inputs.fit_matrix, inputs.fit_y)
    fit_contributions = driver_contributions(model, fit_matrix)
    learned = learn_grid(model, fit_rows, fit_contributions)
    comparison = compare_with_grid(model.meta.grid, learned, model, fit_rows, fit_contributions, fit_y)

    test_frame = inputs.test_rows.to_frame(spec)
    scores = {
        "model": model.probability(inputs.test_matrix),
        "learned_grid": learned.grid.score_frame(test_frame),
        "point_grid": model.meta.grid.score_frame(test_frame),
    }
    roc_auc = {name: float(roc_auc_score(inputs.test_y, s)) for name, s in scores.items()}
    page = render_html(inputs, drivers, learned, comparison, scores, roc_auc, generated_at or datetime.now(UTC))
    return Explanations(drivers, learned, comparison, scores, roc_auc, page)


def write_bundle_files(explanations: Explanations, directory: Path | str) -> list[Path]:
    """Write report.html, importance.json and learned_grid.yaml into a bundle folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / REPORT_FILE
    report.write_text(explanations.html, encoding="utf-8")
    importance = directory / IMPORTANCE_FILE
    importance.write_text(json.dumps(explanations.drivers, indent=2, ensure_ascii=False), encoding="utf-8")
    grid = directory / LEARNED_GRID_FILE
    save_grid(explanations.learned.grid, grid)
    return [report, importance, grid]


# -- numbers behind the page ---------------------------------------------------------------


def captured_in_top(y: np.ndarray, score: np.ndarray, share: float = CAPTURE_TOP_SHARE) -> float:
    """Share of conversions among the top `share` of rows by score (ties in input order)."""
    gains = gains_curve(y, score)
    k = int(math.ceil(share * len(y)))
    return float(gains["share_of_conversions"].iloc[k])


def tier_table(model: ScoringModel, probability: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    """Per tier (hot, warm, cold): share of leads, conversion rate, share of conversions."""
    tiers = np.array([model.tier(float(p)) for p in probability])
    out = []
    for tier in ("hot", "warm", "cold"):
        mask = tiers == tier
        out.append(
            {
                "tier": tier,
                "share_of_leads": float(mask.mean()),
                "conversion_rate": float(y[mask].mean()) if mask.any() else float("nan"),
                "share_of_conversions": float(y[mask].sum() / max(y.sum(), 1)),
            }
        )
    return out


# -- charts -------------------------------------------------------------------------------


def _svg(fig: plt.Figure, title: str) -> str:
    """A figure as inline SVG (no XML prologue), labelled for screen readers."""
    buffer = io.StringIO()
    fig.tight_layout()
    # Text stays text (the browser's sans-serif font): a page of five charts weighs ~150 kB, not ~400.
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(title)}" class="chart" ', 1)


def _thin(curve: pd.DataFrame, points: int = CURVE_POINTS) -> pd.DataFrame:
    """At most `points` evenly spaced rows of a curve (first and last kept): a lighter page."""
    if len(curve) <= points:
        return curve
    return curve.iloc[np.unique(np.linspace(0, len(curve) - 1, points).round().astype(int))]


def _gains_chart(y: np.ndarray, scores: dict[str, np.ndarray]) -> str:
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    for name in ("model", "learned_grid", "point_grid"):
        g = _thin(gains_curve(y, scores[name]))
        ax.plot(100 * g["share_of_leads"], 100 * g["share_of_conversions"], color=COLOURS[name], label=NAMES[name], lw=2)
    ax.plot([0, 100], [0, 100], ls=":", color=COLOURS["random"], label=NAMES["random"])
    ax.axvline(100 * CAPTURE_TOP_SHARE, color="#bbbbbb", lw=0.8)
    ax.set(xlabel="% of leads worked (best first)", ylabel="% of conversions reached", xlim=(0, 100), ylim=(0, 100))
    ax.set_title("Gains: conversions reached by working the top leads", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig, "Gains curve")


def _lift_chart(y: np.ndarray, scores: dict[str, np.ndarray]) -> str:
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    start = max(1, int(0.02 * len(y)))  # the first few leads make a noisy spike
    for name in ("model", "learned_grid", "point_grid"):
        lift = _thin(lift_curve(y, scores[name]).iloc[start - 1 :])
        ax.plot(100 * lift["share_of_leads"], lift["lift"], color=COLOURS[name], label=NAMES[name], lw=2)
    ax.axhline(1.0, ls=":", color=COLOURS["random"], label=NAMES["random"])
    ax.set(xlabel="% of leads worked (best first)", ylabel="Conversion rate ÷ average rate", xlim=(0, 100))
    ax.set_title("Lift: how much better than picking at random", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig, "Lift curve")


def _calibration_chart(y: np.ndarray, probability: np.ndarray) -> str:
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    observed, predicted = calibration_curve(y, probability, n_bins=10, strategy="quantile")
    top = float(max(predicted.max(), observed.max())) * 100 * 1.1
    ax.plot([0, top], [0, top], ls=":", color=COLOURS["random"], label="Perfect calibration")
    ax.plot(100 * predicted, 100 * observed, marker="o", color=COLOURS["model"], label="Model", lw=2)
    ax.set(xlabel="Predicted chance of converting (%)", ylabel="Observed conversion rate (%)", xlim=(0, top), ylim=(0, top))
    ax.set_title("Calibration: predicted vs observed, 10 groups of leads", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig, "Calibration curve")


def _tier_chart(tiers: list[dict[str, Any]], overall: float) -> str:
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    names = [t["tier"].capitalize() for t in tiers]
    rates = [100 * t["conversion_rate"] for t in tiers]
    bars = ax.bar(names, rates, color=["#c0392b", "#e08a00", "#1f6fb4"])
    for bar, t in zip(bars, tiers, strict=True):
        ax.annotate(
            f"{100 * t['conversion_rate']:.1f} %\n{100 * t['share_of_leads']:.0f} % of leads",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center", va="bottom", fontsize=8,
        )
    ax.axhline(100 * overall, ls=":", color=COLOURS["random"], label=f"All leads: {100 * overall:.1f} %")
    ax.set(ylabel="Conversion rate (%)", ylim=(0, max(rates + [100 * overall]) * 1.3))
    ax.set_title("Conversion rate per tier", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return _svg(fig, "Conversion rate per tier")


def _drivers_chart(drivers: list[dict[str, Any]]) -> str:
    top = drivers[:TOP_DRIVERS][::-1]
    fig, ax = plt.subplots(figsize=(5.4, 0.36 * len(top) + 1.2))
    ax.barh([d["title"]["en"] for d in top], [d["mean_abs_points"] for d in top], color=COLOURS["model"])
    ax.set(xlabel="Average effect on the chance of converting (points)")
    ax.set_title("What moves the score most", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig, "Top drivers")


# -- the page -----------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d2733;
       max-width: 1120px; margin: 2rem auto; padding: 0 1.2rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem;
     border-bottom: 1px solid #d9dee4; padding-bottom: .3rem; }
.meta { color: #5b6673; font-size: .9rem; }
.headline { font-size: 1.25rem; background: #eef5fb; border-left: 5px solid #1f6fb4;
            padding: 1rem 1.2rem; margin: 1.2rem 0; }
.figures { display: flex; gap: 1rem; flex-wrap: wrap; }
.figure { flex: 1 1 30rem; } .figure p { font-size: .9rem; color: #3d4a57; }
svg.chart { width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; margin: .6rem 0; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e4e8ec; vertical-align: top; }
th { background: #f5f7f9; } td.num, th.num { text-align: right; white-space: nowrap; }
.up { color: #1e7b34; } .down { color: #b03a2e; }
.kpis { display: flex; gap: 1rem; flex-wrap: wrap; }
.kpi { flex: 1 1 12rem; background: #f5f7f9; padding: .8rem 1rem; border-radius: 6px; }
.kpi b { display: block; font-size: 1.5rem; }
details { margin: .8rem 0; } pre { background: #f5f7f9; padding: .8rem; overflow-x: auto; font-size: .8rem; }
"""


def _pct(x: float, digits: int = 0) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def _date(iso: str) -> str:
    return str(iso)[:10]


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+g}"


def _report_environment() -> jinja2.Environment:
    """The Jinja2 environment of `templates/`: HTML autoescaped, the report's number formats."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("training", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(
        pct=_pct, date=_date, signed=_signed, g=lambda x: f"{x:g}",
        rule_text=lambda r: f"{r['label']} {r['points']:+g}",
    )  # fmt: skip
    return env


def render_html(
    inputs: ReportInputs,
    drivers: dict[str, Any],
    learned: LearnedGrid,
    comparison: list[dict[str, Any]],
    scores: dict[str, np.ndarray],
    roc_auc: dict[str, float],
    generated_at: datetime,
) -> str:
    """The report as one HTML document (inline CSS and SVG, no script, no external resource).

    The page is `templates/report.html.j2`; this function computes what it shows.
    """
    model, meta, y = inputs.model, inputs.model.meta, inputs.test_y
    scorers = ("model", "learned_grid", "point_grid")
    caught = {name: captured_in_top(y, scores[name]) for name in scorers}
    converted_leads = int(pd.unique(inputs.test_lead_ids[y == 1]).size)
    tiers = tier_table(model, scores["model"], y)
    overall = float(y.mean())
    driver_rows = []
    for d in drivers["drivers"][:TOP_DRIVERS]:
        groups = {g["label"]["en"]: g for g in d["groups"]}
        driver_rows.append({
            "title": d["title"]["en"],
            "mean_abs_points": d["mean_abs_points"],
            "up": [(label, groups[label]["conversion_rate"]) for label in d["pushes_up"][:2]],
            "down": [(label, groups[label]["conversion_rate"]) for label in d["pushes_down"][:2]],
        })  # fmt: skip
    mapping_points = [0, 10, 20, 30, 40, 50, 60, 80, 100]
    mapping = learned.probability(model, np.array(mapping_points, dtype=float))
    # SVG drawn here is trusted markup (matplotlib's output): Markup keeps autoescape off it.
    charts = {
        "gains": _gains_chart(y, scores),
        "lift": _lift_chart(y, scores),
        "calibration": _calibration_chart(y, scores["model"]),
        "tiers": _tier_chart(tiers, overall),
        "drivers": _drivers_chart(drivers["drivers"]),
    }
    cells = cell_table(model, inputs.test_matrix, y, inputs.test_lead_ids)
    if cells is not None:
        charts["cells"] = cells_chart(cells, _svg)
    if inputs.accounts is not None:
        charts["accounts"] = accounts_chart(inputs.accounts, _svg)
    when = inputs.when or when_section(meta.hazard.metrics if meta.hazard is not None else None)
    if when is not None:
        charts["when_curve"] = when_curve_chart(when, _svg)
        charts["when_auc"] = when_auc_chart(when, _svg)
    template = _report_environment().get_template("report.html.j2")
    return template.render(
        css=Markup(_CSS),
        meta=meta,
        training=meta.training,
        data=inputs.data,
        test_start=inputs.test_start,
        served_through=inputs.served_through,
        generated_at=generated_at,
        horizon=f"{meta.horizon_days:g}",
        period=drivers["period"],
        caught=caught,
        converted_leads=converted_leads,
        extra_per_100=100 * (caught["model"] - caught["point_grid"]),
        extra_leads=round((caught["model"] - caught["point_grid"]) * converted_leads),
        kpis=[
            ("Model's top 20 % reaches", _pct(caught["model"])),
            ("Your grid's top 20 % reaches", _pct(caught["point_grid"])),
            ("Learned grid's top 20 % reaches", _pct(caught["learned_grid"])),
            ("Average conversion rate", _pct(overall, 1)),
        ],
        scorers=scorers,
        names=NAMES,
        roc_auc=roc_auc,
        overall=overall,
        charts={name: Markup(svg) for name, svg in charts.items()},
        driver_rows=driver_rows,
        learned=learned,
        grid=learned.grid,
        odds_step=_odds_step(overall, 1.0),
        comparison=comparison,
        mapping=list(zip(mapping_points, (float(q) for q in mapping), strict=True)),
        cells=cells,
        trends=trend_table(inputs.test_trend, y, inputs.test_lead_ids),
        trend_thresholds=meta.trend,
        accounts=inputs.accounts,
        when=when,
        when_names=WHEN_SCORERS,
    )


def _odds_step(rate: float, log_odds: float) -> float:
    """How much a probability `rate` rises when its log-odds rise by `log_odds`."""
    if not 0 < rate < 1:
        return float("nan")
    odds = rate / (1 - rate) * math.exp(log_odds)
    return odds / (1 + odds) - rate
