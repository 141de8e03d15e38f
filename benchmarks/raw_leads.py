"""X Education leads sent as their CRM holds them: does serving score them as training did?

    python -m benchmarks.raw_leads --bundle BUNDLE [--data Leads.csv] [--n 300] [--names feature|crm] [--empty null|text]

Trains nothing: give it a bundle trained by `leadscore train --config examples/x-education.yaml`.
For `--n` rows of `../shared/datasets/x-education/Leads.csv` (a seeded sample), it compares the
training pipeline's own probability of the row (the export read and mapped by `sources.loader`,
features by `lead_attribute_rows`) with what `model.scoring.score_lead` (the path of `POST /score`)
answers for the row's raw record: the CSV's text values, keyed by feature name (`--names feature`)
or by the export's own column names (`--names crm`), an empty cell sent as JSON null or as "".
A lead counts as differing when its probability is not exactly equal, or when it is refused.
Only counts and the largest difference are printed; the export is read where it is.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.engine import lead_attribute_rows
from model.bundle import ScoringModel
from model.scoring import LeadIn, LeadRejected, rounded_probability, score_lead
from sources.loader import load_project_data
from training.config import load_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LEADS_CSV = PROJECT_ROOT.parent / "shared" / "datasets" / "x-education" / "Leads.csv"
CONFIG = PROJECT_ROOT / "examples" / "x-education.yaml"
WHEN = datetime(2024, 6, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=LEADS_CSV, help="The X Education Leads.csv")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names", choices=["feature", "crm"], default="feature")
    parser.add_argument("--empty", choices=["null", "text"], default="null")
    args = parser.parse_args()

    config = load_config(CONFIG)
    assert config.data is not None
    model = ScoringModel.load(args.bundle)
    project = load_project_data(config.data, model.spec, leads_path=args.data)
    leads = project.dataset.leads
    trained = dict(
        zip(leads["lead_id"], rounded_probability(model.probability(model.encode(lead_attribute_rows(leads, model.spec)))), strict=True)
    )

    raw = pd.read_csv(args.data, dtype=str, keep_default_na=False)
    columns = [*config.data.columns.categorical, *config.data.columns.numeric]
    used = [c for c in columns if config.data.feature_name(c) in model.spec.attribute_columns()]
    picked = np.random.default_rng(args.seed).choice(len(raw), size=min(args.n, len(raw)), replace=False)
    differing = refused = 0
    largest = 0.0
    for i in picked:
        record = raw.iloc[int(i)]
        lead_id = record[config.data.leads.id].strip()
        attributes = {
            (config.data.feature_name(c) if args.names == "feature" else c): (
                None if record[c] == "" and args.empty == "null" else record[c]
            )
            for c in used
        }
        lead = LeadIn(lead_id=lead_id, created_at=WHEN, attributes=attributes)
        try:
            served = score_lead(model, lead, WHEN, with_reasons=False).probability
        except LeadRejected:
            refused += 1
            continue
        if served != trained[lead_id]:
            differing += 1
            largest = max(largest, abs(served - float(trained[lead_id])))
    print(
        f"{differing + refused}/{len(picked)} raw leads not scored as at training "
        f"({differing} with another probability, largest difference {largest:.4f}; {refused} refused) "
        f"[names={args.names}, empty={args.empty}]"
    )


if __name__ == "__main__":
    main()
