"""`python -m benchmarks.run [--quick]`: every benchmark, JSON per section, one markdown table.

Sections (see each module):
- one_lead: one lead with 100 interactions, score + top-5 reasons, in-process and over HTTP;
- batch: batch scoring throughput, features included;
- feature_build: 100k and 1M leads, time and peak memory;
- training: end to end on 100k and 1M snapshots, share outside LightGBM;
- explain: exact TreeSHAP cost, previous vs current model size, and the AUC cost;
- x_education: the real X Education export, when `../shared/datasets/x-education` is there;
- dask: feature build and batch scoring on a Dask LocalCluster;
- treeshap: exact reasons from the TreeSHAP tables, per row, beside a prediction of the same forest.

`--quick` runs every section at small sizes (the test suite's smoke test); the figures are
then only a check that everything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("one_lead", "batch", "feature_build", "training", "explain", "x_education", "dask", "treeshap")


def markdown_table(results: list[dict[str, object]]) -> str:
    """One row per figure: the figure, its bare baseline, the ratio, the target."""
    lines = [
        "| benchmark | stat | figure | bare baseline | × bare | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for section in results:
        for f in section["figures"]:  # type: ignore[union-attr]
            met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
            lines.append(
                f"| {f['name']} | {f['metric']} | {_number(f['value'])} {f['unit']} | "
                f"{_number(f['baseline'])} {f['unit']} ({f['baseline_name']}) | {f['ratio']:.2f} | "
                f"{f['target']} | {met} |"
            )
    return "\n".join(lines)


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


TRAIN_BUNDLE = (
    "import sys; from pathlib import Path; from benchmarks.bench_model import train_bench_bundle; "
    "print(train_bench_bundle(Path(sys.argv[1]), int(sys.argv[2])))"
)


def _child(args: list[str]) -> str:
    done = subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout


def _run_section(name: str, quick: bool, bundle: Path | None, out_dir: Path) -> int:
    """Run one section in this process and write its JSON (0), or skip it (0, nothing written)."""
    from benchmarks import (
        batch,
        dask_scale,
        explain_budget,
        feature_build,
        one_lead,
        training_time,
        treeshap,
        x_education_speed,
    )
    from benchmarks.bench_model import simulated_data
    from benchmarks.measure import Section

    section: Section | None
    if name == "one_lead":
        section = one_lead.run(bundle, quick)
    elif name == "batch":
        section = batch.run(bundle, quick)
    elif name == "feature_build":
        section = feature_build.run(quick)
    elif name == "training":
        section = training_time.run(quick)
    elif name == "treeshap":
        section = treeshap.run(bundle, quick)
    elif name == "explain":
        section = explain_budget.run(simulated_data(2_000 if quick else 20_000), quick)
    elif name == "x_education":
        section = x_education_speed.run(quick)
        if section is None:
            print("[bench] x_education: ../shared/datasets/x-education/Leads.csv or examples/x-education.yaml "
                  "not found", file=sys.stderr)
            return 0
    else:
        section = dask_scale.run(bundle, quick)
    section.write(out_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description="leadscore benchmarks")
    parser.add_argument("--quick", action="store_true", help="Small sizes: checks that everything runs.")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"Comma-separated subset of {SECTIONS}.")
    parser.add_argument("--out", type=Path, default=None, help="Results folder (default benchmarks/results).")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="Score with this bundle instead of training one on simulated leads.")
    parser.add_argument("--section-in-process", choices=SECTIONS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")

    # As the `leadscore` CLI does, before LightGBM is loaded: OpenMP threads that spin while
    # waiting make LightGBM many times slower on a busy machine (benchmarks/README.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from benchmarks.measure import RESULTS_DIR

    out_dir = args.out or RESULTS_DIR
    if args.section_in_process:
        return _run_section(args.section_in_process, args.quick, args.bundle, out_dir)

    results: list[dict[str, object]] = []
    started = time.perf_counter()
    started_at = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="leadscore-bench-") as tmp:
        bundle = args.bundle
        if bundle is None and {"one_lead", "batch", "dask", "treeshap"} & set(chosen):
            print("[bench] training the scoring model on simulated leads ...", file=sys.stderr, flush=True)
            bundle = Path(_child(["-c", TRAIN_BUNDLE, tmp, str(2_000 if args.quick else 20_000)]).strip().splitlines()[-1])
        for name in chosen:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            # A fresh process per section: each is measured in a process that holds only what
            # it needs (memory, garbage, threads), whatever ran before it.
            command = ["-m", "benchmarks.run", "--section-in-process", name, "--out", str(out_dir)]
            command += (["--quick"] if args.quick else []) + (["--bundle", str(bundle)] if bundle else [])
            _child(command)
            path = out_dir / f"{name}.json"
            if path.exists() and path.stat().st_mtime >= started_at - 1:
                results.append(json.loads(path.read_text()))
            else:
                print(f"[bench] {name}: skipped (see above)", file=sys.stderr)
    load_after = os.getloadavg()
    print(markdown_table(results))
    print(
        f"\n{'quick run (sizes too small to mean anything); ' if args.quick else ''}"
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"{time.perf_counter() - started:.0f} s; JSON in {out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
