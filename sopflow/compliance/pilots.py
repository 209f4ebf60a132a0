"""Pilots: an SOP's split steps compared arm by arm — runs, successes, conversion — and whether
the arms differ more than chance would make them, by a test from scipy.stats.

A run's arm at a split step is the `variant` its run recorded there (the last, if the run came
back to the step). A success is a finished run whose result is one of its SOP version's
`success_results`; conversion = successes / finished runs (a running run has not converted
*yet*: counting it as a failure would favour the arm that finishes first).

The test, on the table arms × (success, other result) of finished runs:
- each arm needs MIN_FINISHED finished runs, else "too few runs to tell";
- every finished run with the same outcome: no test can tell arms apart, not significant;
- an expected count under 5 (Cochran's rule: the chi-square approximation is poor there):
  Fisher's exact test, scipy.stats.fisher_exact — exact for two arms; for more, its p-value is
  estimated by permutations (PermutationMethod, a fixed seed so a report is reproducible);
- otherwise Pearson's chi-square test of independence, scipy.stats.chi2_contingency, without
  Yates' correction (Fisher's exact covers the small counts it was meant for).
Significant at 5%: p < 0.05. With several arms it says that *some* arm differs, not which.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, literal_column, select
from sqlalchemy.orm import Session

from sopflow.compliance.funnel import deployed, run_conditions
from sopflow.compliance.traced import Count, Plans, RepScope, Window
from sopflow.errors import SopflowError
from sopflow.principals import Principal
from sopflow.store.models import Run, StepEvent

MIN_FINISHED = 10  # finished runs each arm needs before any test is worth reading
ALPHA = 0.05
PERMUTATIONS = 9_999
SEED = 20_261_203
Verdict = Literal["too_few_runs", "not_significant", "significant_at_5pct"]
VERDICT_TEXT: dict[Verdict, str] = {
    "too_few_runs": "too few runs to tell",
    "not_significant": "not significant",
    "significant_at_5pct": "significant at 5%",
}
Test = Literal["chi_square", "fisher_exact", "fisher_exact_permutation"]
_BATCH = 5_000


@dataclass
class Arm:
    runs: int = 0
    finished: int = 0
    successes: int = 0


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    test: Test | None = None
    statistic: float | None = None
    p_value: float | None = None
    why: str = ""

    def view(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "text": VERDICT_TEXT[self.verdict],
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "why": self.why,
        }


def judge(arms: dict[str, Arm]) -> Judgement:
    """Do the arms' conversions differ? (the module docstring says how it is decided)"""
    short = sorted(name for name, arm in arms.items() if arm.finished < MIN_FINISHED)
    if len(arms) < 2 or short:
        why = (
            f"each arm needs {MIN_FINISHED} finished runs; short: {', '.join(short)}"
            if short
            else "one arm only: nothing to compare"
        )
        return Judgement("too_few_runs", why=why)
    # Imported here: scipy takes seconds to import, and every gateway would pay it at start
    # (and every worker: the SDK's default build id hashes all loaded modules).
    import numpy as np
    from scipy import stats

    table = np.array([[a.successes, a.finished - a.successes] for a in arms.values()])
    if (table.sum(axis=0) == 0).any():
        return Judgement(
            "not_significant", why="every finished run had the same outcome in every arm"
        )
    expected = stats.contingency.expected_freq(table)
    if (expected < 5).any():
        if len(arms) == 2:
            fisher = stats.fisher_exact(table)
            test: Test = "fisher_exact"
        else:
            method = stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=SEED)
            fisher = stats.fisher_exact(table, method=method)
            test = "fisher_exact_permutation"
        p, statistic = float(fisher.pvalue), None
        why = "an expected count is under 5: Fisher's exact test"
    else:
        chi = stats.chi2_contingency(table, correction=False)
        p, statistic, test = float(chi.pvalue), float(chi.statistic), "chi_square"
        why = f"Pearson's chi-square test of independence, {int(chi.dof)} degrees of freedom"
    verdict: Verdict = "significant_at_5pct" if p < ALPHA else "not_significant"
    return Judgement(verdict, test, statistic, p, why)


class Pilots:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def report(
        self, principal: Principal, sop: str, window: Window, now: datetime
    ) -> dict[str, Any]:
        plans = deployed(self.engine, sop)  # UnknownSopError: 404
        splits = {s.id for p in plans for s in p.sop.steps if s.kind == "split"}
        if not splits:
            raise SopflowError(f"SOP {sop!r} has no split step: it runs no pilot to compare")
        if not any(p.sop.success_results for p in plans):
            raise SopflowError(
                f"SOP {sop!r} names no success_results: add the results that count as a "
                "success (e.g. success_results: [converted]) to compare conversion"
            )
        where = run_conditions(sop, window, RepScope.of(principal))
        query = (
            select(
                StepEvent.workflow_id,
                StepEvent.step,
                StepEvent.detail,
                Run.digest,
                Run.status,
                Run.result,
            )
            .join(Run, Run.workflow_id == StepEvent.workflow_id)
            .where(
                *where,
                StepEvent.kind == literal_column("'record'"),
                StepEvent.action == literal_column("'variant'"),
            )
            .order_by(StepEvent.id)
        )
        # (split step, run) → (arm, success?, finished?); the last record wins
        taken: dict[tuple[str, str], tuple[str, bool, bool]] = {}
        success = Plans(self.engine)
        with Session(self.engine) as session:
            rows = session.execute(
                query, execution_options={"stream_results": True, "yield_per": _BATCH}
            )
            for workflow_id, step, detail, digest, status, result in rows:
                finished = status == "finished"
                won = finished and result in success(digest).sop.success_results
                arm = str((detail or {}).get("variant"))
                taken[step, workflow_id] = (arm, won, finished)
        arms: dict[str, dict[str, Arm]] = defaultdict(dict)
        for step in splits:  # arms no run took yet are shown at zero
            for plan in plans:
                if plan.has_step(step):
                    variants = getattr(plan.step(step), "variants", [])
                    for variant in variants:
                        arms[step].setdefault(variant.name, Arm())
        for (step, _), (arm, won, finished) in taken.items():
            tally = arms[step].setdefault(arm, Arm())
            tally.runs += 1
            tally.finished += finished
            tally.successes += won
        return self._view(sop, arms, window, now)

    def _view(
        self, sop: str, arms: dict[str, dict[str, Arm]], window: Window, now: datetime
    ) -> dict[str, Any]:
        def runs(value: int, **extra: Any) -> dict[str, Any]:
            # The listings have no arm filter: the SOP's runs hold the arm's.
            return Count("runs", {"sop": sop} | window.query() | extra, False, value).view()

        return {
            "sop": sop,
            "since": window.since.isoformat() if window.since else None,
            "until": window.until.isoformat() if window.until else None,
            "as_of": now.isoformat(),
            "min_finished": MIN_FINISHED,
            "splits": [
                {
                    "step": step,
                    "variants": [
                        {
                            "variant": name,
                            "runs": runs(arm.runs),
                            "finished": runs(arm.finished, status="finished"),
                            "successes": runs(arm.successes, status="finished"),
                            "conversion": round(arm.successes / arm.finished, 4)
                            if arm.finished
                            else None,
                        }
                        for name, arm in sorted(by_arm.items())
                    ],
                    "significance": judge(by_arm).view(),
                }
                for step, by_arm in sorted(arms.items())
            ],
        }
