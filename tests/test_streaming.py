"""Batch scoring of a folder of parts (`training.streaming`, `sources.partitioned`).

The streamed path must give what the in-memory path gives on the whole folder: the same
scores lead for lead, the same validation report rule for rule, every quarantined row written;
and its memory must follow the size of a part, not the number of parts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract import ContractError
from leadscore.cli import app
from model.compiled import CompileMode
from model.scoring import TABLE_COLUMNS, score_table
from sources.folder import load_dataset
from sources.partitioned import is_partitioned, lead_parts, part_of_lead, prepare_partitions
from training.streaming import score_parts

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _flat_folder_with_bad_rows(simulated_dir: Path, target: Path, *, with_meta: bool) -> Path:
    """The simulated folder as text, plus a lead with a bad created_at, a duplicated lead id and an orphan interaction."""
    target.mkdir()
    leads = pd.read_csv(simulated_dir / "leads.csv", dtype=str, keep_default_na=False, na_values=[""])
    events = pd.read_csv(simulated_dir / "interactions.csv", dtype=str, keep_default_na=False, na_values=[""])
    bad_date = leads.iloc[[5]].assign(lead_id="bad-date", created_at="not a date")
    twin = leads.iloc[[7]].assign(lead_id=leads["lead_id"].iloc[8])  # shares the id of row 8: both go
    orphan = events.iloc[[0]].assign(lead_id="nobody")
    pd.concat([leads, bad_date, twin], ignore_index=True).to_csv(target / "leads.csv", index=False)
    pd.concat([events, orphan], ignore_index=True).to_csv(target / "interactions.csv", index=False)
    if with_meta:
        shutil.copyfile(simulated_dir / "meta.json", target / "meta.json")
    return target


def _breaches(report) -> list[tuple[str, str, int, str]]:
    return sorted((b.table, b.rule, b.count, b.action) for b in report.breaches)


@pytest.mark.parametrize(("with_meta", "reasons"), [(True, False), (False, False), (True, True)])
def test_streamed_scores_and_report_equal_the_in_memory_path(
    training_result, simulated_dir: Path, tmp_path: Path, with_meta: bool, reasons: bool
) -> None:
    model = training_result.model
    flat = _flat_folder_with_bad_rows(simulated_dir, tmp_path / "flat", with_meta=with_meta)
    whole = load_dataset(flat, model.spec)
    as_of = (whole.data_end - pd.Timedelta(days=100)).to_pydatetime()
    expected = score_table(model, whole.leads, whole.interactions, as_of, with_reasons=reasons)

    parts_dir = tmp_path / "parts"
    assert prepare_partitions(flat, parts_dir, 4, batch_rows=1_000, buffer_rows=5_000) == 4
    assert is_partitioned(parts_dir) and len(lead_parts(parts_dir)) == 4
    out = tmp_path / "scores.parquet"
    result = score_parts(parts_dir, out, model, as_of, quarantine_out=tmp_path / "q.csv", scorer=score_table,
                         reasons=reasons, language="en", compiled=CompileMode.never)

    streamed = pd.read_parquet(out)
    assert list(streamed.columns) == list(TABLE_COLUMNS)
    assert result.scored == len(streamed) == len(expected)
    assert not streamed["lead_id"].duplicated().any()
    left = streamed.sort_values("lead_id").reset_index(drop=True)
    right = expected.sort_values("lead_id").reset_index(drop=True)
    assert left["lead_id"].tolist() == right["lead_id"].tolist()
    assert (left["probability"].to_numpy() == right["probability"].to_numpy()).all()  # exact, not close
    for column in ("score", "mql", "grid_points"):
        assert left[column].tolist() == right[column].tolist(), column
    for column in ("tier", "as_of", "model_version", "top_reason"):
        # A missing reason is a Parquet null either way (None in memory, NaN in a text column read back).
        assert [None if pd.isna(v) else v for v in left[column]] == [None if pd.isna(v) else v for v in right[column]], column

    # The report: every rule with the count of the whole folder, the same data end and source.
    assert _breaches(result.report) == _breaches(whole.report)
    assert (result.report.data_end, result.report.data_end_source) == (whole.report.data_end, whole.report.data_end_source)
    assert (result.leads, result.interactions) == (len(whole.leads), len(whole.interactions))
    quarantined = pd.read_csv(tmp_path / "q.csv", dtype=str)
    assert result.quarantined == len(quarantined) == len(whole.quarantine) >= 4
    assert {"bad-date", "nobody"} <= set(quarantined["lead_id"])
    assert sorted(zip(quarantined["table"], quarantined["lead_id"], strict=True)) == sorted(
        zip(whole.quarantine["table"], whole.quarantine["lead_id"].astype(str), strict=True)
    )


def test_prepare_keeps_every_row_and_each_lead_with_its_interactions(simulated_dir: Path, tmp_path: Path) -> None:
    flat = _flat_folder_with_bad_rows(simulated_dir, tmp_path / "flat", with_meta=True)
    parts_dir = tmp_path / "parts"
    prepare_partitions(flat, parts_dir, 5, batch_rows=700, buffer_rows=2_000)
    leads_in = pd.read_csv(flat / "leads.csv", dtype=str)
    events_in = pd.read_csv(flat / "interactions.csv", dtype=str)
    leads_out, events_out = [], []
    for k, part in enumerate(lead_parts(parts_dir)):
        leads = pd.read_parquet(part.leads)
        assert (part_of_lead(leads["lead_id"], 5) == k).all()
        leads_out.append(leads)
        if part.interactions is not None:
            events = pd.read_parquet(part.interactions)
            assert (part_of_lead(events["lead_id"], 5) == k).all()
            events_out.append(events)
    assert sum(map(len, leads_out)) == len(leads_in)
    assert sum(map(len, events_out)) == len(events_in)
    assert json.loads((parts_dir / "meta.json").read_text()) == json.loads((flat / "meta.json").read_text())
    # Within a part, rows keep their source order (the first of repeated events is the one kept).
    for k, events in enumerate(events_out):
        source = events_in[part_of_lead(events_in["lead_id"], 5) == k]
        assert events["lead_id"].tolist() == source["lead_id"].tolist()
        assert events["occurred_at"].tolist() == source["occurred_at"].tolist()


def test_interactions_of_a_lead_no_part_holds_are_quarantined_not_lost(training_result, tmp_path: Path) -> None:
    model = training_result.model
    spec_columns = model.spec.attribute_columns()
    flat = tmp_path / "flat"
    flat.mkdir()
    leads = pd.DataFrame({"lead_id": ["a", "b"], "created_at": ["2024-01-01T00:00:00Z"] * 2,
                          **{c: [None, None] for c in spec_columns}})
    n_parts = 8
    taken = set(part_of_lead(leads["lead_id"], n_parts))
    stray = next(f"stray-{i}" for i in range(1_000) if part_of_lead(pd.Series([f"stray-{i}"]), n_parts)[0] not in taken)
    events = pd.DataFrame({"lead_id": ["a", stray], "occurred_at": ["2024-01-02T00:00:00Z"] * 2, "type": ["page_view"] * 2})
    leads.to_csv(flat / "leads.csv", index=False)
    events.to_csv(flat / "interactions.csv", index=False)
    (flat / "meta.json").write_text(json.dumps({"export_at": "2024-03-01T00:00:00Z"}))
    prepare_partitions(flat, tmp_path / "parts", n_parts)
    result = score_parts(tmp_path / "parts", tmp_path / "s.csv", model, pd.Timestamp("2024-02-01", tz="UTC").to_pydatetime(),
                         quarantine_out=tmp_path / "q.csv", scorer=score_table, reasons=False, language="en",
                         compiled=CompileMode.never)
    assert result.scored == 2 and result.interactions == 1
    assert [(b.table, b.count) for b in result.report.breaches] == [("interactions", 1)]
    assert "unknown or quarantined lead_id" in result.report.breaches[0].rule
    assert pd.read_csv(tmp_path / "q.csv")["lead_id"].tolist() == [stray]
    assert sorted(pd.read_csv(tmp_path / "s.csv")["lead_id"]) == ["a", "b"]


def test_an_interactions_part_without_its_leads_part_is_refused(simulated_dir: Path, tmp_path: Path) -> None:
    parts_dir = tmp_path / "parts"
    prepare_partitions(simulated_dir, parts_dir, 3)
    (parts_dir / "leads" / "part-00001.parquet").unlink()
    with pytest.raises(ContractError, match=r"part-00001\.parquet.*must be in its own part"):
        lead_parts(parts_dir)


def test_cli_prepare_then_score_streams_and_reports_bad_rows(
    trained_bundle: Path, simulated_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flat = _flat_folder_with_bad_rows(simulated_dir, tmp_path / "flat", with_meta=True)
    monkeypatch.chdir(tmp_path)  # the default quarantine file is .leadscore/quarantine.csv here
    runner = CliRunner()
    prepared = runner.invoke(app, ["prepare", "-i", str(flat), "-o", str(tmp_path / "parts"), "--parts", "3"])
    assert prepared.exit_code == 0, prepared.output
    assert "wrote 3 parts" in prepared.output
    again = runner.invoke(app, ["prepare", "-i", str(flat), "-o", str(tmp_path / "parts")])
    assert again.exit_code == 2 and "already holds parts" in again.output
    out = tmp_path / "scores.csv"
    scored = runner.invoke(app, ["score", "-i", str(tmp_path / "parts"), "-o", str(out), "--bundle", str(trained_bundle),
                                 "--as-of", "2025-01-01T00:00:00+00:00", "--no-reasons"])
    assert scored.exit_code == 0, scored.output
    assert "3 parts, read and scored one at a time" in scored.output
    assert "unparsable, out-of-range or empty created_at" in scored.output
    assert "share a lead_id with another row" in scored.output
    assert "unknown or quarantined lead_id" in scored.output
    assert "rows set aside in .leadscore/quarantine.csv" in scored.output
    table = pd.read_csv(out)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert f"scored {len(table)} leads to {out}" in scored.output


_PEAK_CHILD = """
import os, sys, threading, time
from pathlib import Path
import pandas as pd
from benchmarks.synthetic import synthetic_dataset
from model.bundle import ScoringModel
from model.compiled import CompileMode
from model.scoring import score_table
from training.streaming import score_parts

bundle, folder = Path(sys.argv[1]), Path(sys.argv[2])
as_of = pd.Timestamp("2025-06-24", tz="UTC").to_pydatetime()
model = ScoringModel.load(bundle)
warm = synthetic_dataset(200, seed=99)  # imports and first-call costs, before the mark
score_table(model, warm.leads, warm.interactions, as_of)

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

# The high-water mark of RSS since the mark (ru_maxrss cannot be reset): sampled every 2 ms.
before, peak, done = rss_mb(), [0.0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.002)
sampler = threading.Thread(target=sample)
sampler.start()
score_parts(folder, folder.parent / (folder.name + ".parquet"), model, as_of, quarantine_out=folder.parent / "q.csv",
            scorer=score_table, reasons=False, language="en", compiled=CompileMode.never)
done.set()
sampler.join()
print(before, peak[0])
"""


def test_peak_memory_follows_the_part_size_not_the_number_of_parts(trained_bundle: Path, tmp_path: Path) -> None:
    from benchmarks.big import generate

    def peak(n_parts: int) -> tuple[float, float]:
        folder = tmp_path / f"p{n_parts}"
        generate(20_000 * n_parts, 20.0, folder, 20_000)
        done = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(trained_bundle), str(folder)],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
        before, after = map(float, done.stdout.split())
        return before, after

    before_small, small = peak(1)
    _, big = peak(4)
    one_part = small - before_small  # what scoring one part of 20,000 leads / 400,000 interactions adds
    assert one_part > 20, (before_small, small)  # the child measures something
    # Holding the 4x data would add about three more parts' worth; streaming adds allocator noise only.
    assert big - small < 0.5 * one_part, (before_small, small, big)


def test_a_part_that_cannot_be_read_stops_the_run_and_leaves_no_output(training_result, simulated_dir: Path, tmp_path: Path) -> None:
    parts_dir = tmp_path / "parts"
    prepare_partitions(simulated_dir, parts_dir, 3)
    last = parts_dir / "leads" / "part-00002.parquet"
    pd.read_parquet(last).drop(columns=["created_at"]).to_parquet(last, index=False)
    out = tmp_path / "scores.parquet"
    with pytest.raises(ContractError, match=r"part-00002\.parquet.*created_at"):
        score_parts(parts_dir, out, training_result.model, pd.Timestamp("2025-01-01", tz="UTC").to_pydatetime(),
                    quarantine_out=tmp_path / "q.csv", scorer=score_table, reasons=False, language="en",
                    compiled=CompileMode.never)
    assert not out.exists() and not (tmp_path / "scores.parquet.partial").exists()
