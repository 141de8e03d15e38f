"""Bigger than memory: a folder of parts generated, then scored part by part, time and peak RSS.

    python -m benchmarks.big --leads 10000000 --interactions-per-lead 20 --out /tmp/big

1. **generation** (not part of the target): `benchmarks.synthetic.synthetic_dataset` per part of
   `--leads-per-part` leads (its distributions, its seed + part number), lead ids prefixed by the
   part, written as `leads/part-K.parquet` and `interactions/part-K.parquet` with a meta.json
   (`export_at`): the layout `leadscore prepare` writes. Never more than one part in memory.
2. **streamed**: `python -m leadscore score --input OUT --out OUT.scores.parquet --no-reasons`,
   the CLI a user runs: every part read, validated, its features built, scored and appended.
3. **bare baseline**, same run: a child that reads the same Parquet files part by part
   (`pandas.read_parquet`, nothing else) and runs LightGBM's predict (the bundle's booster,
   `--compiled never` as the streamed run) on a ready matrix of each part's row count (the
   encoded features of part 0, built once, not timed): the I/O and the prediction that any
   scorer pays, without validation, features or writing.

Each stage is a child process; its wall time and its own peak RSS (`os.wait4`'s ru_maxrss,
children of the child included through RUSAGE_CHILDREN being in it) are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LEADS_PER_PART = 200_000
AS_OF = "2025-06-24T00:00:00+00:00"  # the synthetic data's end (START + SPAN_DAYS)
SPEC_FILE = "big.json"


def generate(n_leads: int, per_lead: float, out: Path, leads_per_part: int, seed: int = 0) -> int:
    """Write the synthetic data set as a folder of parts, one part in memory at a time.

    Returns:
        The number of interactions written.
    """
    from benchmarks.synthetic import SECONDS_PER_DAY, SPAN_DAYS, START, synthetic_dataset

    (out / "leads").mkdir(parents=True, exist_ok=True)
    (out / "interactions").mkdir(parents=True, exist_ok=True)
    n_events = 0
    for k, first in enumerate(range(0, n_leads, leads_per_part)):
        data = synthetic_dataset(min(leads_per_part, n_leads - first), per_lead, seed=seed + k)
        prefix = f"B{k:05d}-"
        leads = data.leads.assign(lead_id=prefix + data.leads["lead_id"])
        events = data.interactions.assign(lead_id=prefix + data.interactions["lead_id"])
        pq.write_table(pa.Table.from_pandas(leads, preserve_index=False), out / "leads" / f"part-{k:05d}.parquet")
        pq.write_table(pa.Table.from_pandas(events, preserve_index=False), out / "interactions" / f"part-{k:05d}.parquet")
        n_events += len(events)
        del data, leads, events
    end = START + pd.Timedelta(seconds=SPAN_DAYS * SECONDS_PER_DAY)
    (out / "meta.json").write_text(json.dumps({"export_at": end.isoformat()}))
    (out / SPEC_FILE).write_text(json.dumps({"leads": n_leads, "per_lead": per_lead, "leads_per_part": leads_per_part,
                                             "seed": seed, "interactions": n_events}))
    return n_events


def bare(data: Path, bundle: Path) -> dict[str, float]:
    """Read every part's Parquet files and predict a ready matrix of each part's row count."""
    from features.engine import snapshot_features
    from model.bundle import ScoringModel
    from model.scoring import schema_applied
    from sources.partitioned import lead_parts, read_part

    model = ScoringModel.load(bundle)
    parts = lead_parts(data)
    leads, events = read_part(parts[0])
    leads, events = schema_applied(model, leads, events)
    snapshots = pd.DataFrame({"lead_id": leads["lead_id"].to_numpy(), "as_of": pd.Timestamp(AS_OF)})
    matrix = model.encode(snapshot_features(leads, events, snapshots, model.spec))
    del leads, events, snapshots
    read_s = predict_s = 0.0
    rows = 0
    for part in parts:
        start = time.perf_counter()
        leads, events = read_part(part)
        read_s += time.perf_counter() - start
        start = time.perf_counter()
        n = len(leads)
        ready = matrix if n == len(matrix) else matrix[np.arange(n) % len(matrix)]
        model.raw(ready)
        predict_s += time.perf_counter() - start
        rows += n
        del leads, events
    return {"read_s": read_s, "predict_s": predict_s, "rows": rows}


def _child(args: list[str], log: Path, cwd: Path = PROJECT_ROOT) -> tuple[float, float, int]:
    """Run `python ARGS` (niced like this process), return (wall s, peak RSS MB, exit code)."""
    start = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def _bundle(path: Path | None, workdir: Path) -> Path:
    if path is not None:
        return path
    target = PROJECT_ROOT / ".leadscore" / "bench-data" / "bundle-big"
    if not (target / "bundle-2000-11").exists():
        code = ("import sys; from pathlib import Path; from benchmarks.bench_model import train_bench_bundle; "
                "train_bench_bundle(Path(sys.argv[1]), 2000)")
        subprocess.run([sys.executable, "-c", code, str(target)], check=True, cwd=PROJECT_ROOT)
    return target / "bundle-2000-11"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--interactions-per-lead", type=float, default=20.0)
    parser.add_argument("--leads-per-part", type=int, default=LEADS_PER_PART)
    parser.add_argument("--out", type=Path, default=Path("/tmp/big"))
    parser.add_argument("--bundle", type=Path, default=None, help="Bundle folder; default: trained once on 2,000 simulated leads.")
    parser.add_argument("--stage", choices=["all", "generate", "bare"], default="all", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.stage == "generate":
        print(generate(args.leads, args.interactions_per_lead, out, args.leads_per_part))
        return
    if args.stage == "bare":
        print(json.dumps(bare(out, args.bundle)))
        return

    wanted = {"leads": args.leads, "per_lead": args.interactions_per_lead, "leads_per_part": args.leads_per_part}
    spec_path = out / SPEC_FILE
    have = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    logs = out.parent / f"{out.name}.logs"
    logs.mkdir(parents=True, exist_ok=True)
    gen = None
    if {k: have.get(k) for k in wanted} != wanted:
        if (out / "leads").exists():
            sys.exit(f"{out}: holds another data set ({have or 'unknown'}): remove it or choose another --out")
        gen = _child(["-m", "benchmarks.big", "--stage", "generate", "--leads", str(args.leads),
                      "--interactions-per-lead", str(args.interactions_per_lead),
                      "--leads-per-part", str(args.leads_per_part), "--out", str(out)], logs / "generate.log")
        if gen[2] != 0:
            sys.exit(f"generation failed: see {logs / 'generate.log'}")
    n_events = json.loads(spec_path.read_text())["interactions"]
    bundle = _bundle(args.bundle, out.parent)
    scores = out.parent / f"{out.name}.scores.parquet"
    streamed = _child(["-m", "leadscore", "score", "--input", str(out), "--out", str(scores), "--bundle", str(bundle),
                       "--as-of", AS_OF, "--no-reasons", "--compiled", "never"], logs / "score.log",
                      cwd=logs)  # its .leadscore/quarantine.csv goes beside the logs, not into the project
    if streamed[2] != 0:
        sys.exit(f"streamed scoring failed: see {logs / 'score.log'}")
    baseline = _child(["-m", "benchmarks.big", "--stage", "bare", "--out", str(out), "--bundle", str(bundle)],
                      logs / "bare.log")
    if baseline[2] != 0:
        sys.exit(f"bare baseline failed: see {logs / 'bare.log'}")
    split = json.loads((logs / "bare.log").read_text().strip().splitlines()[-1])
    scored = pq.ParquetFile(scores).metadata.num_rows
    report(args, n_events, gen, streamed, baseline, split, scored)


def report(args: argparse.Namespace, n_events: int, gen: tuple[float, float, int] | None,
           streamed: tuple[float, float, int], baseline: tuple[float, float, int], split: dict[str, float],
           scored: int) -> None:
    """Print the figures and write benchmarks/results/big.json."""
    from benchmarks.measure import Section

    n = args.leads
    section = Section("big", f"Bigger than memory: {n:,} leads / {n_events:,} interactions, part by part", False)
    section.add("streamed feature build + scoring (leadscore score on parts, no reasons)", "wall time", "s",
                streamed[0], "read the same Parquet parts + LightGBM predict on ready matrices", baseline[0], 1)
    section.add("streamed feature build + scoring", "throughput", "leads/s", n / streamed[0],
                "read + bare predict", n / baseline[0], 1)
    section.add("streamed feature build + scoring", "peak RSS", "MB", streamed[1],
                "read + bare predict", baseline[1], 1)
    section.details.update(
        n_leads=n, n_interactions=n_events, leads_per_part=args.leads_per_part, scored=scored,
        bare_read_s=round(split["read_s"], 1), bare_predict_s=round(split["predict_s"], 1),
        generation_s=None if gen is None else round(gen[0], 1), generation_peak_rss_mb=None if gen is None else round(gen[1]),
        command=" ".join(["python -m benchmarks.big", f"--leads {n}", f"--interactions-per-lead {args.interactions_per_lead:g}",
                          f"--leads-per-part {args.leads_per_part}", f"--out {args.out}"]),
    )
    path = section.write()
    print(f"{n:,} leads / {n_events:,} interactions in parts of {args.leads_per_part:,} leads; {scored:,} scored")
    if gen is not None:
        print(f"generation (not the target): {gen[0]:.1f} s, peak RSS {gen[1]:.0f} MB")
    print(f"streamed (leadscore score):  {streamed[0]:.1f} s, {n / streamed[0]:,.0f} leads/s, peak RSS {streamed[1]:.0f} MB")
    print(f"bare (read + predict):       {baseline[0]:.1f} s (read {split['read_s']:.1f} s, predict {split['predict_s']:.1f} s), "
          f"{n / baseline[0]:,.0f} leads/s, peak RSS {baseline[1]:.0f} MB")
    print(f"written {path}")


if __name__ == "__main__":
    main()
