"""Is a bundle fit to serve? Its meaning checked, and its model file loaded where a crash is harmless.

`ScoringModel.load` checks a bundle's format; a bundle can pass it and still be wrong in ways
that score every lead badly and silently: a feature list in another order than the model's
columns, empty or unordered score quantiles, tiers that make every lead hot, a calibration
slope of 1e308. `bundle_check` looks at what the numbers mean, and scores the smoke lead
(`EXAMPLE_LEAD`, or the one the bundle stores) to compare its probability with the one
training stored when it saved the bundle (`SmokeCheck` in bundle.json).

A damaged `model.txt` (truncated, NaN or 1e308 leaves) can make LightGBM's C++ code end the
process instead of raising. `check_in_child` therefore loads and checks a candidate in a
child process (`python -m model.check BUNDLE`); only a bundle that passed there is loaded by
the caller's process.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.bundle import MODEL_FILE, BundleMeta, ScoringModel, SmokeCheck, model_file_of
from model.linear import LinearModel
from model.scoring import LeadIn, score_lead

# The lead every bundle scores before it may serve: nothing unusual, so any failure is the bundle's.
EXAMPLE_LEAD = LeadIn(
    lead_id="smoke-test",
    created_at=datetime(2024, 3, 1, 10, tzinfo=UTC),
    attributes={
        "email": "someone@example.com", "industry": "software", "company_size": "50-199", "employee_count": 120,
        "country": "FR", "job_role": "marketing", "seniority": "director", "source": "webinar",
        "marketing_consent": "yes",
    },
    interactions=[
        {"type": "page_view", "occurred_at": datetime(2024, 3, 2, 9, tzinfo=UTC)},
        {"type": "pricing_page_view", "occurred_at": datetime(2024, 3, 20, 9, tzinfo=UTC)},
        {"type": "demo_request", "occurred_at": datetime(2024, 3, 25, 16, tzinfo=UTC)},
    ],
)  # fmt: skip
EXAMPLE_AS_OF = datetime(2024, 4, 1, tzinfo=UTC)

SCORE_QUANTILES = 101  # percentiles 0..100 of the validation probabilities
# The smoke lead's probability at serving may differ from training's by rounding only.
SMOKE_TOLERANCE = 1e-6
# Calibration inputs are the booster's log-odds: a few units, tens at the extremes. A slope or
# knot far outside that is a damaged file, not a fit.
MAX_PLATT_SLOPE = 100.0
MAX_ABS_LOG_ODDS = 1_000.0
# How long the child may take to load and check a bundle on a busy machine.
CHILD_TIMEOUT_S = 120.0
CHILD_NICENESS = 10  # more than the server's: the child competes with requests being served, it yields to them


class BundleInvalid(ValueError):
    """A bundle that must not serve, with every problem found."""


@dataclass(frozen=True)
class BundleCheck:
    """What `bundle_check` found.

    Attributes:
        problems: Why the bundle must not serve; empty when it may.
        notes: What could not be checked, for the log (an older bundle without a smoke probability).
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def smoke_check_of(model: ScoringModel) -> SmokeCheck:
    """The smoke lead and the probability `model` gives it: what training stores in the bundle."""
    out = score_lead(model, EXAMPLE_LEAD, EXAMPLE_AS_OF, with_reasons=False)
    return SmokeCheck(
        lead=EXAMPLE_LEAD.model_dump(mode="json"), as_of=EXAMPLE_AS_OF.isoformat(), probability=out.probability
    )


def _finite(values: Sequence[float]) -> bool:
    return bool(np.all(np.isfinite(np.asarray(values, dtype=np.float64))))


def _non_decreasing(values: Sequence[float]) -> bool:
    return bool(np.all(np.diff(np.asarray(values, dtype=np.float64)) >= 0))


def meta_problems(meta: BundleMeta, model_feature_names: Sequence[str]) -> list[str]:
    """What is wrong with the numbers of bundle.json, read for their meaning; empty when nothing.

    Args:
        meta: The bundle's bundle.json.
        model_feature_names: The column names the model file itself lists (LightGBM's
            `feature_names=` line, a linear model's `feature_names`).
    """
    problems = []
    expected = meta.feature_spec.feature_names()
    if meta.feature_names != expected:
        problems.append(_order_problem("feature_names", meta.feature_names, expected, "the feature spec's order"))
    elif list(model_feature_names) != meta.feature_names:
        listed_by = f"the columns {model_file_of(meta.model_family)} lists"
        problems.append(_order_problem("feature_names", meta.feature_names, list(model_feature_names), listed_by))
    categorical = set(meta.feature_spec.categorical_features())
    stray = sorted(set(meta.categorical_levels) - categorical)
    unlevelled = sorted(categorical - set(meta.categorical_levels))
    if stray or unlevelled:
        problems.append(
            f"categorical_levels: levels for features that are not categorical: {stray}; categorical features "
            f"without levels: {unlevelled}"
        )
    q = meta.score_quantiles
    if len(q) != SCORE_QUANTILES:
        problems.append(f"score_quantiles: {len(q)} values, the 0-100 score needs {SCORE_QUANTILES}")
    elif not _finite(q) or min(q) < 0.0 or max(q) > 1.0:
        problems.append("score_quantiles: not all finite probabilities in [0, 1]")
    elif not _non_decreasing(q):
        problems.append("score_quantiles: not in increasing order")
    elif q[0] == q[-1]:
        problems.append(f"score_quantiles: all equal ({q[0]}): every lead would get the same score")
    tiers = meta.tiers
    if not (_finite([tiers.hot, tiers.warm]) and 0.0 <= tiers.warm <= tiers.hot <= 1.0):
        problems.append(f"tiers: hot {tiers.hot} and warm {tiers.warm} must satisfy 0 <= warm <= hot <= 1")
    if not (math.isfinite(meta.mql_probability) and 0.0 <= meta.mql_probability <= 1.0):
        problems.append(f"mql_probability: {meta.mql_probability}, not a probability in [0, 1]")
    problems.extend(_calibration_problems(meta))
    return problems


def _order_problem(what: str, found: list[str], expected: list[str], against: str) -> str:
    if sorted(found) == sorted(expected):
        first = next(i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b)
        return (
            f"{what}: the same {len(found)} names as {against} in another order (position {first}: "
            f"{found[first]!r}, expected {expected[first]!r})"
        )
    return (
        f"{what}: not {against}: unknown there: {sorted(set(found) - set(expected))[:5]}; "
        f"missing: {sorted(set(expected) - set(found))[:5]}"
    )


def _calibration_problems(meta: BundleMeta) -> list[str]:
    c = meta.calibration
    if c.method == "platt":
        if not _finite([c.a, c.b]):
            return [f"calibration: Platt parameters a={c.a}, b={c.b} are not finite"]
        if not 0.0 < c.a <= MAX_PLATT_SLOPE or abs(c.b) > MAX_ABS_LOG_ODDS:
            return [
                f"calibration: Platt slope a={c.a:g} (must be in (0, {MAX_PLATT_SLOPE:g}]) or intercept b={c.b:g} "
                f"(must be within ±{MAX_ABS_LOG_ODDS:g}) is not a fit of log-odds"
            ]
        return []
    if not c.x or len(c.x) != len(c.y):
        return [f"calibration: isotonic needs as many y as x knots, at least one: has {len(c.x)} x and {len(c.y)} y"]
    if not (_finite(c.x) and _finite(c.y)) or max(abs(v) for v in c.x) > MAX_ABS_LOG_ODDS:
        return [f"calibration: isotonic knots must be finite, x within ±{MAX_ABS_LOG_ODDS:g}"]
    if min(c.y) < 0.0 or max(c.y) > 1.0 or not (_non_decreasing(c.x) and _non_decreasing(c.y)):
        return ["calibration: isotonic knots must increase in x, and in y within [0, 1]"]
    if c.blend and (not _finite([c.a, c.b]) or not 0.0 < c.a <= MAX_PLATT_SLOPE or abs(c.b) > MAX_ABS_LOG_ODDS):
        return [f"calibration: the isotonic map's Platt share has slope a={c.a:g} or intercept b={c.b:g} that is not a fit of log-odds"]
    return []


def bundle_check(model: ScoringModel) -> BundleCheck:
    """Check a loaded bundle for meaning, then score the smoke lead with reasons.

    The smoke lead is the one training stored with its probability in bundle.json (`smoke`);
    the probability now must equal it (a bundle.json and a model file that do not belong
    together, or a feature definition that changed since training, change it). A bundle
    saved before leadscore stored one is scored on `EXAMPLE_LEAD` and the comparison is
    skipped, with a note.
    """
    names = model.booster.feature_names if isinstance(model.booster, LinearModel) else model.booster.feature_name()
    problems = meta_problems(model.meta, names)
    notes = []
    stored = model.meta.smoke
    if stored is None:
        lead, as_of = EXAMPLE_LEAD, EXAMPLE_AS_OF
        notes.append(
            f"model {model.meta.model_version}: its bundle stores no smoke-lead probability (saved before "
            "leadscore stored one): the example lead's probability was not compared with training's"
        )
    else:
        lead, as_of = LeadIn.model_validate(stored.lead), datetime.fromisoformat(stored.as_of)
    try:
        out = score_lead(model, lead, as_of, with_reasons=True)
    except Exception as exc:  # any failure on a lead every model scores is the bundle's: a problem, named
        problems.append(f"failed the smoke prediction on the example lead: {exc.__class__.__name__}: {exc}")
        return BundleCheck(problems, notes)
    if not (math.isfinite(out.probability) and 0.0 <= out.probability <= 1.0):
        problems.append(f"gave the example lead the probability {out.probability}, not one in [0, 1]")
    elif stored is not None and abs(out.probability - stored.probability) > SMOKE_TOLERANCE:
        problems.append(
            f"gives the smoke lead the probability {out.probability:.4f}, training stored {stored.probability:.4f}: "
            f"bundle.json and {model_file_of(model.meta.model_family)} do not belong together, or the features changed"
        )
    return BundleCheck(problems, notes)


def load_and_check(directory: Path) -> tuple[ScoringModel, list[str]]:
    """Load a bundle and check it (`bundle_check`); returns the model and the notes.

    Raises:
        BundleInvalid: It cannot be loaded, or it has problems: all of them, in one message.
    """
    from lightgbm.basic import LightGBMError

    try:
        model = ScoringModel.load(directory)
    except (OSError, ValueError, LightGBMError) as exc:
        raise BundleInvalid(str(exc)) from exc
    found = bundle_check(model)
    if found.problems:
        raise BundleInvalid(f"model {model.meta.model_version}: {'; '.join(found.problems)}")
    return model, found.notes


def _last_words(stderr: str) -> str:
    """The line of a dead child's error output that says why: LightGBM's fatal error, else the last one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if "[Fatal]" in line]
    return (fatal or lines or ["(no output)"])[-1][:300]


def _yield_to_requests(pid: int) -> None:
    """Give the child `CHILD_NICENESS` more than this process, from its start.

    Set here rather than by the child itself: its imports alone take seconds of CPU, which
    would otherwise compete with the requests being served at their priority.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS))
    except ProcessLookupError:  # already ended (and reaped): nothing left to lower
        return


def check_in_child(directory: Path, timeout_s: float = CHILD_TIMEOUT_S) -> list[str]:
    """Load and check a bundle in a child process, where a crash of the model library ends only the child.

    Args:
        directory: The bundle folder.
        timeout_s: How long the child may take.

    Returns:
        The check's notes.

    Raises:
        BundleInvalid: The child found problems, crashed (naming the signal and LightGBM's
            last words), or did not finish in time.
    """
    root = str(Path(__file__).resolve().parents[1])  # the folder `model` is imported from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.setdefault("OMP_NUM_THREADS", "1")
    with subprocess.Popen(
        [sys.executable, "-m", "model.check", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", env=env, cwd=root,
    ) as child:  # fmt: skip
        _yield_to_requests(child.pid)
        try:
            stdout, stderr = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise BundleInvalid(f"model bundle {directory}: the check did not finish within {timeout_s:.0f} s") from None
    done = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    lines = done.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if done.returncode == 0 and answer is not None:
        notes: list[str] = answer["notes"]
        return notes
    if answer is not None and "problem" in answer:
        raise BundleInvalid(str(answer["problem"]))
    if done.returncode < 0:
        how = f"was killed by {signal.Signals(-done.returncode).name}"
    else:
        how = f"exited with code {done.returncode}"
    said = _last_words("\n".join([done.stdout, done.stderr]))  # LightGBM writes its errors to stdout
    raise BundleInvalid(f"model bundle {directory}: loading {MODEL_FILE} crashed the check process (it {how}): {said}")


def main(argv: Sequence[str]) -> int:
    """`python -m model.check BUNDLE`: one JSON line, `{"notes": [...]}` (exit 0) or `{"problem": "..."}` (exit 1).

    `check_in_child` lowers its priority from the start (`_yield_to_requests`).
    """
    if len(argv) != 1:
        print(json.dumps({"problem": "usage: python -m model.check BUNDLE_DIR"}))
        return 1
    try:
        _model, notes = load_and_check(Path(argv[0]))
    except BundleInvalid as exc:
        print(json.dumps({"problem": str(exc)}))
        return 1
    print(json.dumps({"notes": notes}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
