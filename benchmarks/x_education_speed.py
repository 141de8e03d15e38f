"""(e) The X Education export (`../shared/datasets/x-education/Leads.csv`), when present.

A real CRM export: 9,240 leads, no timestamps, so no snapshots and no interaction features.
Measured through the project's own static path, `leadscore train --config
examples/x-education.yaml` (read and map the CSV, leakage guard, ordered split, LightGBM,
calibration, baselines, bundle), and `score_lead` on the bundle it writes.

Baselines, in the same run: one LightGBM fit on the same columns done directly (read the CSV,
text columns to category codes, "Select" = missing, split by `Lead Number`, project default
settings), and the bare `predict` + `pred_contrib` of the trained bundle on a prepared row.
Columns filled in after contact or at export time (`Tags`, `Lead Quality`, `Lead Profile`,
`Asymmetrique *`, `Last Activity`, `Last Notable Activity`) are left out of the direct fit, as
the leakage guard leaves them out of the project's.

The file is read where it is; it is never copied into the project.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from benchmarks.measure import Section, interleaved
from features.engine import lead_features
from model.bundle import ScoringModel
from model.scoring import LeadIn, score_lead
from training.config import LightGBMParams, TrainingConfig
from training.pipeline import lightgbm_params

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LEADS_CSV = PROJECT_ROOT.parent / "shared" / "datasets" / "x-education" / "Leads.csv"
CONFIG = PROJECT_ROOT / "examples" / "x-education.yaml"
AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
TARGET = "Converted"
ORDER = "Lead Number"
NOT_FEATURES = ("Prospect ID", ORDER, TARGET)
AFTER_CONTACT = (
    "Tags", "Lead Quality", "Lead Profile", "Asymmetrique Activity Index", "Asymmetrique Profile Index",
    "Asymmetrique Activity Score", "Asymmetrique Profile Score", "Last Activity", "Last Notable Activity",
)


def prepare(raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
    """Model matrix (float64, categories as codes), labels, column names, categorical positions.

    Rows come sorted by `Lead Number`, oldest first.
    """
    frame = raw.sort_values(ORDER, kind="stable").reset_index(drop=True)
    frame = frame.loc[:, [c for c in frame.columns if not c.startswith("Unnamed")]]
    y = frame[TARGET].to_numpy(dtype=np.int8)
    columns = [c for c in frame.columns if c not in NOT_FEATURES and c not in AFTER_CONTACT]
    matrix = np.empty((len(frame), len(columns)))
    categorical = []
    for j, name in enumerate(columns):
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column.dtype):
            matrix[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            codes, _levels = pd.factorize(column.where(column != "Select"), sort=True)
            matrix[:, j] = np.where(codes < 0, np.nan, codes)
            categorical.append(j)
    return matrix, y, columns, categorical


def _lgb_params() -> dict[str, object]:
    return lightgbm_params(TrainingConfig())


def _train(matrix: np.ndarray, y: np.ndarray, names: list[str], categorical: list[int]) -> tuple[lgb.Booster, float]:
    n = len(y)
    valid_start, test_start = int(n * 0.65), int(n * 0.8)
    dtrain = lgb.Dataset(matrix[:valid_start], y[:valid_start], feature_name=names,
                         categorical_feature=categorical, free_raw_data=False)
    dvalid = lgb.Dataset(matrix[valid_start:test_start], y[valid_start:test_start], reference=dtrain)
    booster = lgb.train(_lgb_params(), dtrain, num_boost_round=LightGBMParams().max_rounds, valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(LightGBMParams().early_stopping_rounds, verbose=False)])
    auc = float(roc_auc_score(y[test_start:], booster.predict(matrix[test_start:],
                                                              num_iteration=booster.best_iteration)))
    return booster, auc


def _cli_train(bundle_dir: Path) -> float:
    """`leadscore train` on the example config, in a child process; its wall time (s)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "leadscore", "train", "--config", str(CONFIG), "--no-mlflow",
         "--bundle-out", str(bundle_dir)],
        check=True, capture_output=True, text=True, cwd=PROJECT_ROOT,
    )
    return time.perf_counter() - start


def _lead_from_row(raw: pd.Series, model: ScoringModel) -> LeadIn:
    from training.config import load_config

    data = load_config(CONFIG).data
    wanted = set(model.spec.attribute_columns())
    attributes = {}
    for column, value in raw.items():
        name = data.feature_name(str(column))
        if name in wanted:
            attributes[name] = None if pd.isna(value) or value == "Select" else value
    return LeadIn(lead_id=str(raw["Prospect ID"]), created_at=datetime(2024, 1, 1, tzinfo=UTC), attributes=attributes)


def run(quick: bool, csv: Path = LEADS_CSV) -> Section | None:
    """The section, or None when the export or the example config is not there."""
    if not csv.is_file() or not CONFIG.is_file():
        return None
    section = Section("x_education", "X Education export (real, static): training and scoring", quick)
    runs = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="leadscore-xed-") as tmp:
        cli_s, bare_s, aucs = [], [], []
        for i in range(runs):
            cli_s.append(_cli_train(Path(tmp) / f"bundle-{i}"))
            start = time.perf_counter()
            matrix, y, names, categorical = prepare(pd.read_csv(csv))
            _booster, auc = _train(matrix, y, names, categorical)
            bare_s.append(time.perf_counter() - start)
            aucs.append(auc)
        model = ScoringModel.load(Path(tmp) / "bundle-0")
    section.add(f"X Education: leadscore train --config examples/x-education.yaml, {len(y):,} leads", "wall time",
                "s", float(np.median(cli_s)), "one LightGBM fit on the same columns (read CSV + encode + fit)",
                float(np.median(bare_s)), runs,
                note=f"includes Python start-up, leakage guard, baselines; direct fit test AUC {np.median(aucs):.3f}")
    raw = pd.read_csv(csv).sort_values(ORDER).iloc[-1]
    lead = _lead_from_row(raw, model)
    row = model.encode(lead_features(0, lead.attributes, [], [], 0, model.spec))
    calls = 200 if quick else 2000
    times = interleaved(
        {
            "score": lambda: score_lead(model, lead, AS_OF, top_k=5),
            "bare": lambda: (model.booster.predict(row, raw_score=True, num_threads=1),
                             model.booster.predict(row, pred_contrib=True, num_threads=1)),
        },
        calls,
    )
    section.add("X Education: one lead, score + top-5 reasons, in-process (static bundle)", "p50", "ms",
                float(np.median(times["score"])), "bare LightGBM predict + pred_contrib, prepared row",
                float(np.median(times["bare"])), calls, note=f"{model.booster.num_trees()} trees")
    section.details.update(columns=names, categorical=[names[j] for j in categorical], left_out=list(AFTER_CONTACT),
                           direct_fit_test_auc=aucs, bundle_metrics=model.meta.metrics)
    return section
