"""Evaluation plots (PNG), drawn from test-period scores of every scorer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from training.metrics import gains_curve

COLOURS = {"model": "#1f77b4", "point_grid": "#d62728", "logistic_regression": "#2ca02c", "oracle": "#7f7f7f"}
NAMES = {"model": "LightGBM model", "point_grid": "Point grid", "logistic_regression": "Logistic regression", "oracle": "Oracle (simulator truth)"}


def plot_roc(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=NAMES.get(name, name), color=COLOURS.get(name))
    ax.plot([0, 1], [0, 1], ls=":", color="black", lw=0.8, label="Random")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC, test period")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_gains(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in scores.items():
        g = gains_curve(y, p)
        ax.plot(g["share_of_leads"], g["share_of_conversions"], label=NAMES.get(name, name), color=COLOURS.get(name))
    ax.plot([0, 1], [0, 1], ls=":", color="black", lw=0.8, label="Random")
    ax.axvline(0.2, color="grey", lw=0.6)
    ax.set(xlabel="Share of leads contacted (best first)", ylabel="Share of conversions caught", title="Gains, test period")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_calibration(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in scores.items():
        frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax.plot(mean, frac, marker="o", ms=3, label=NAMES.get(name, name), color=COLOURS.get(name))
    top = max(float(np.max([np.quantile(p, 0.99) for p in scores.values()])), 0.05)
    ax.plot([0, top], [0, top], ls=":", color="black", lw=0.8, label="Perfect")
    ax.set(xlabel="Predicted probability", ylabel="Observed conversion rate", title="Calibration, test period")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_importance(names: list[str], gains: np.ndarray, path: Path, top: int = 20) -> Path:
    order = np.argsort(gains)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(order) + 1))
    ax.barh([names[i] for i in order], gains[order] / gains.sum(), color=COLOURS["model"])
    ax.set(xlabel="Share of total gain", title="Feature importance (gain)")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
