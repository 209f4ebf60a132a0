"""The reports' answers (the dicts GET /api/v1/reports/... return) as dashboard tables. Nothing is
counted here: each number is the report's, and each count links to the dashboard's runs or tasks
listing with the filter its `Count` carries. A count whose listing holds more rows than it
counted (`exact: false`: the listings have no filter for a step, a result or an arm) is marked,
and its title says so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, assert_never

from sopflow.compliance.traced import Listing
from sopflow.gateway.dashboard.access import PREFIX
from sopflow.gateway.dashboard.render import href
from sopflow.gateway.dashboard.tables import Column, Row, Table

COUNTS = "counts"  # a row's key for the Count behind each of its numbers
SUPERSET = (
    "The listing behind this count holds these {value} and more {listing}: it has no filter "
    "for what was counted here."
)


def listing_path(listing: Listing) -> str:
    match listing:
        case "runs":
            return f"{PREFIX}/runs"
        case "tasks":
            return f"{PREFIX}/tasks"
        case _:
            assert_never(listing)


def is_count(value: Any) -> bool:
    return isinstance(value, Mapping) and {"value", "listing", "filter", "exact"} <= value.keys()


def flat(report_row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A report's row with each Count as its value, the Counts kept under COUNTS."""
    row: dict[str, Any] = {COUNTS: {}}
    for key, value in report_row.items():
        if is_count(value):
            row[prefix + key] = value["value"]
            row[COUNTS][prefix + key] = value
        else:
            row[prefix + key] = value
    return row


def _dated(given: Mapping[str, Any]) -> dict[str, Any]:
    """The filter with its window as times, so a link reads since=2026-11-01 where it can."""
    return {
        key: datetime.fromisoformat(value) if key in ("since", "until") else value
        for key, value in given.items()
    }


def count_column(key: str, title: str, linked: bool, group: str | None = None) -> Column:
    """A count's column: linked to the listing behind it (unless the viewer has none: a rep),
    marked when that listing is a superset."""

    def count(row: Row) -> Mapping[str, Any] | None:
        found: Mapping[str, Any] | None = row[COUNTS].get(key)
        return found

    def link(row: Row) -> str | None:
        found = count(row)
        if found is None or not linked:
            return None
        return href(listing_path(found["listing"]), **_dated(found["filter"]))

    def hint(row: Row) -> str | None:
        found = count(row)
        if found is None or found["exact"]:
            return None
        return SUPERSET.format(value=found["value"], listing=found["listing"])

    return Column(key, title, href=link, hint=hint, numeric=True, group=group)


def rep_anchor(rep: str) -> str:
    """A rep's row on the reps page: `/dashboard/reps#rep-ana` (a run page links its reps)."""
    return f"rep-{rep}"


def rep_href(rep: str) -> str:
    return f"{PREFIX}/reps#{rep_anchor(rep)}"


def _metrics(linked: bool) -> list[Column]:
    def count(key: str, title: str) -> Column:
        return count_column(key, title, linked)

    return [
        Column("score", "Score", numeric=True),
        count("tasks", "Tasks"),
        count("on_time", "On time"),
        Column("on_time_pct", "On time %", numeric=True),
        count("overdue", "Overdue"),
        Column("overdue_pct", "Overdue %", numeric=True),
        count("skipped", "Skipped"),
        Column("skipped_pct", "Skipped %", numeric=True),
        count("open", "Open"),
        Column("sla_met_pct", "SLA met %", numeric=True),
        count("violations", "Violations"),
        count("successes", "Successes"),
        Column("touches_per_success", "Touches per success", numeric=True),
    ]


def reps_tables(report: Mapping[str, Any], linked: bool) -> list[Table]:
    """The reps report: one row per rep, one per team."""

    def team_link(row: Row) -> str | None:
        return href(f"{PREFIX}/reps", team=row["team"]) if row["team"] and linked else None

    reps = Table(
        "reps", "Reps",
        [Column("rep", "Rep"), Column("name", "Name"), Column("team", "Team", href=team_link),
         *_metrics(linked)],
        [flat(r) for r in report["reps"]],
        empty="No rep in sight with these filters.",
        row_id=lambda r: rep_anchor(r["rep"]),
    )  # fmt: skip
    teams = Table(
        "teams", "Teams",
        [Column("team", "Team", href=team_link), Column("name", "Name"),
         Column("reps", "Reps", numeric=True), *_metrics(linked)],
        [flat(t) for t in report["teams"]],
        empty="No team in sight with these filters.",
        row_id=lambda r: f"team-{r['team']}",
    )  # fmt: skip
    return [reps, teams]


FUNNEL_COUNTS = [
    ("entries", "Entries"),
    ("on_time", "On time"),
    ("overdue", "Overdue"),
    ("skipped", "Skipped"),
    ("open", "Open"),
]


def funnel_tables(report: Mapping[str, Any]) -> list[Table]:
    """The SOP's versions, and its steps in plan order with the versions side by side."""
    versions = Table(
        "versions", "Versions",
        [Column("version", "Version", numeric=True), Column("digest", "Digest"),
         count_column("runs", "Runs", True)],
        [flat(v) | {"digest": v["digest"].rpartition(":")[2][:12]} for v in report["versions"]],
        empty="No version deployed.",
    )  # fmt: skip
    numbers = [v["version"] for v in report["versions"]]
    results: dict[int, list[str]] = {n: [] for n in numbers}
    for step in report["steps"]:
        for cell in step["columns"]:
            if cell is not None:
                known = results[cell["version"]]
                known += [r for r in cell["exits"] if r not in known]
    columns = [Column("step", "Step"), Column("kind", "Kind")]
    for n in numbers:
        group = f"v{n}"
        columns += [count_column(f"{group}.{k}", title, True, group) for k, title in FUNNEL_COUNTS]
        columns += [
            count_column(f"{group}.exit.{r}", f"→ {r}", True, group) for r in sorted(results[n])
        ]
    rows: list[dict[str, Any]] = []
    for step in report["steps"]:
        row: dict[str, Any] = {"step": step["step"], "kind": step["kind"], COUNTS: {}}
        for cell in step["columns"]:
            if cell is None:  # the step is not in that version: its cells stay blank
                continue
            group = f"v{cell['version']}"
            row |= {f"{group}.exit.{r}": 0 for r in results[cell["version"]]}  # none ended here
            for found in (
                flat({k: cell[k] for k, _ in FUNNEL_COUNTS}, f"{group}."),
                flat(cell["exits"], f"{group}.exit."),
            ):
                row[COUNTS] |= found.pop(COUNTS)
                row |= found
        rows.append(row)
    steps = Table("steps", "Steps in plan order", columns, rows, empty="The SOP has no step.")
    return [versions, steps]


def pilots_tables(report: Mapping[str, Any]) -> list[Table]:
    """Per split step and arm: runs, successes, conversion, and the step's significance."""
    rows = []
    for split in report["splits"]:
        judged = split["significance"]
        for arm in split["variants"]:
            conversion = arm["conversion"]
            rows.append(
                flat(arm)
                | {
                    "step": split["step"],
                    "conversion": None if conversion is None else round(100 * conversion, 1),
                    "test": judged["test"],
                    "p_value": judged["p_value"],
                    "verdict": judged["text"],
                    "why": judged["why"],
                }
            )
    arms = Table(
        "arms", "Arms of each split step",
        [Column("step", "Split step"), Column("variant", "Arm"),
         count_column("runs", "Runs", True), count_column("finished", "Finished", True),
         count_column("successes", "Successes", True),
         Column("conversion", "Conversion %", numeric=True), Column("test", "Test"),
         Column("p_value", "p-value", numeric=True), Column("verdict", "Verdict"),
         Column("why", "How it was judged")],
        rows,
        empty="No split step.",
    )  # fmt: skip
    return [arms]


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def referral_tables(report: Mapping[str, Any]) -> list[Table]:
    """The referral funnel per period, its total, and the referrers no ask reached. Its numbers
    are people and visits, not runs or tasks: no listing is behind them."""
    rows: Sequence[Mapping[str, Any]] = [*report["rows"], report["total"], report["not_asked"]]
    funnel = Table(
        "referrals", "Referral funnel",
        [Column("period", "Period (first enrolment)"), Column("loyal", "Loyal", numeric=True),
         Column("asked", "Asked", numeric=True), Column("shared", "Shared", numeric=True),
         Column("visits", "Visitors", numeric=True),
         Column("signed_up", "Signed up", numeric=True),
         Column("converted", "Converted", numeric=True),
         Column("referral_rate", "Referral rate %", numeric=True),
         Column("visits_per_sharer", "Visitors per sharer", numeric=True),
         Column("signup_rate", "Sign-up rate %", numeric=True),
         Column("page_conversion", "Conversion %", numeric=True)],
        [dict(r) | {
            "referral_rate": _percent(r["referral_rate"]),
            "visits_per_sharer": None if r["visits_per_sharer"] is None
            else round(r["visits_per_sharer"], 2),
            "signup_rate": _percent(r["signup_rate"]),
            "page_conversion": _percent(r["page_conversion"]),
        } for r in rows],
    )  # fmt: skip
    return [funnel]
