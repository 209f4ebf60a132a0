"""Pilots: conversion per arm on hand-built runs (SQLite and PostgreSQL), and the significance
tests checked against p-values computed here from the contingency table by the textbook
formulas, not by scipy."""

from __future__ import annotations

import itertools
import math
from datetime import timedelta
from typing import Any

import pytest

from sopflow.compliance.pilots import MIN_FINISHED, Arm, Pilots, judge
from sopflow.compliance.traced import Window
from sopflow.errors import SopflowError, UnknownSopError
from sopflow.principals import ADMIN, Principal, Role
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

from .report_world import BASE, NOW, OTHER, PILOT, PILOT_SOURCE, Writer

MIN = timedelta(minutes=1)
# (arm, finished runs, of them converted): 4/20, 6/20, 14/20; every expected count ≥ 5
TABLE = [("script_a", 20, 4), ("script_b", 20, 6), ("script_c", 20, 14)]


def pearson_chi_square(rows: list[tuple[int, int]]) -> float:
    """Σ (observed − expected)² / expected, expected = row total × column total / N."""
    total = sum(a + b for a, b in rows)
    columns = [sum(r[0] for r in rows), sum(r[1] for r in rows)]
    return sum(
        (observed - (a + b) * columns[j] / total) ** 2 / ((a + b) * columns[j] / total)
        for a, b in rows
        for j, observed in enumerate((a, b))
    )


def exact_p(rows: list[tuple[int, int]]) -> float:
    """Fisher's exact test by enumeration: with the row totals and the column totals fixed,
    P(table) = Π C(row total, successes) / C(N, all successes); the p-value sums the tables no
    more likely than the one observed."""
    sizes = [a + b for a, b in rows]
    successes = sum(a for a, _ in rows)
    whole = math.comb(sum(sizes), successes)

    def probability(xs: tuple[int, ...]) -> float:
        return math.prod(math.comb(n, x) for n, x in zip(sizes, xs, strict=True)) / whole

    observed = probability(tuple(a for a, _ in rows))
    tables = (
        xs for xs in itertools.product(*(range(n + 1) for n in sizes)) if sum(xs) == successes
    )
    return sum(p for xs in tables if (p := probability(xs)) <= observed * (1 + 1e-7))


def build(store: Store) -> None:
    store.deploy(PILOT)
    RepDirectory(store.engine).import_teams(
        [{"id": "field", "name": "Field", "reps": [{"id": "cy"}]}]
    )
    n = 0
    for arm, finished, converted in TABLE:
        for i in range(finished + 2):  # two more per arm still running: not in the conversion
            n += 1
            at = BASE + n * MIN
            run = Writer(store, PILOT, f"p{n}", at)
            run.note("pick_script", "variant", at, variant=arm)
            step = "call_" + arm[-1]
            rep = "cy" if n % 10 == 0 else "ana"
            run.task(step, rep, at, at + timedelta(hours=1))
            if i < finished:
                result = "converted" if i < converted else ("interested" if i % 2 else "lost")
                run.outcome(step, "booked" if result == "converted" else "no_answer", at, rep)
                run.finish(result if result != "lost" else "not_converted", at, result)


@pytest.fixture
def pilots(report_store: Store) -> Pilots:
    build(report_store)
    return Pilots(report_store.engine)


def arms(found: dict[str, Any]) -> dict[str, tuple[int, int, int, float | None]]:
    (split,) = found["splits"]
    return {
        v["variant"]: (
            v["runs"]["value"],
            v["finished"]["value"],
            v["successes"]["value"],
            v["conversion"],
        )
        for v in split["variants"]
    }


def test_conversion_per_arm_and_a_chi_square_p_value_as_computed_by_hand(
    pilots: Pilots,
) -> None:
    found = pilots.report(ADMIN, "script_pilot", Window(), NOW)
    assert arms(found) == {
        "script_a": (22, 20, 4, 0.2), "script_b": (22, 20, 6, 0.3), "script_c": (22, 20, 14, 0.7),
    }  # fmt: skip
    significance = found["splits"][0]["significance"]
    statistic = pearson_chi_square([(c, f - c) for _, f, c in TABLE])
    assert statistic == pytest.approx(11.6667, abs=1e-4)
    # Two degrees of freedom: the chi-square survival function is exp(−x/2) exactly.
    assert significance["test"] == "chi_square"
    assert significance["statistic"] == pytest.approx(statistic, rel=1e-9)
    assert significance["p_value"] == pytest.approx(math.exp(-statistic / 2), rel=1e-9)
    assert significance["verdict"] == "significant_at_5pct"
    assert significance["text"] == "significant at 5%"


def test_the_window_and_the_scope_narrow_the_runs(pilots: Pilots) -> None:
    early = pilots.report(ADMIN, "script_pilot", Window(until=BASE + 23 * MIN), NOW)
    assert arms(early)["script_a"] == (22, 20, 4, 0.2)
    assert arms(early)["script_b"] == (0, 0, 0, None)  # enrolled later
    assert early["splits"][0]["significance"]["text"] == "too few runs to tell"
    sue = Principal("sue", Role.supervisor, teams=frozenset({"field"}))
    theirs = pilots.report(sue, "script_pilot", Window(), NOW)
    # cy had the tasks of every tenth run: p10, p20 (script_a), p30, p40 (b), p50, p60 (c)
    assert {arm: counts[0] for arm, counts in arms(theirs).items()} == {
        "script_a": 2, "script_b": 2, "script_c": 2,
    }  # fmt: skip


def test_refusals_name_the_sop_and_what_is_missing(report_store: Store) -> None:
    report_store.deploy(OTHER)
    plain = {k: v for k, v in PILOT_SOURCE.items() if k != "success_results"}
    report_store.deploy(compile_plan(Sop.model_validate(plain | {"id": "bare_pilot"})))
    pilots = Pilots(report_store.engine)
    with pytest.raises(UnknownSopError, match="'nope'"):
        pilots.report(ADMIN, "nope", Window(), NOW)
    with pytest.raises(SopflowError, match="SOP 'other_sop' has no split step"):
        pilots.report(ADMIN, "other_sop", Window(), NOW)
    with pytest.raises(SopflowError, match="SOP 'bare_pilot' names no success_results"):
        pilots.report(ADMIN, "bare_pilot", Window(), NOW)


# ---------------------------------------------------------------- the choice of test
def test_two_arms_with_small_expected_counts_take_fishers_exact_test() -> None:
    rows = [(1, 11), (7, 5)]  # expected successes 4 per arm: under 5
    found = judge({"a": Arm(12, 12, 1), "b": Arm(12, 12, 7)})
    assert found.test == "fisher_exact"
    assert found.p_value == pytest.approx(exact_p(rows), rel=1e-9)
    assert found.verdict == "significant_at_5pct"  # p ≈ 0.027


def test_more_arms_with_small_counts_estimate_fishers_p_by_permutations() -> None:
    rows = [(1, 11), (2, 10), (6, 6)]
    found = judge({"a": Arm(12, 12, 1), "b": Arm(12, 12, 2), "c": Arm(12, 12, 6)})
    assert found.test == "fisher_exact_permutation"
    assert found.p_value == pytest.approx(exact_p(rows), abs=0.015)  # 9,999 permutations
    assert found.verdict == "not_significant"
    assert judge({"a": Arm(12, 12, 1), "b": Arm(12, 12, 2), "c": Arm(12, 12, 6)}) == found


def test_too_few_runs_to_tell() -> None:
    short = judge({"a": Arm(30, MIN_FINISHED - 1, 0), "b": Arm(30, 30, 20)})
    assert short.view() | {"why": ""} == {
        "verdict": "too_few_runs", "text": "too few runs to tell", "test": None,
        "statistic": None, "p_value": None, "why": "",
    }  # fmt: skip
    assert "short: a" in short.why
    assert judge({"a": Arm(30, 30, 3)}).verdict == "too_few_runs"  # one arm: nothing to compare


def test_no_difference_when_every_run_ended_alike() -> None:
    found = judge({"a": Arm(20, 20, 0), "b": Arm(20, 20, 0)})
    assert (found.verdict, found.test, found.p_value) == ("not_significant", None, None)
