"""Benchmark: evaluate RFM segments over 1M contacts and 5M purchase events on PostgreSQL.

Generates the rows with SQL generate_series in a schema of its own (dropped afterwards): contacts
c0000001…, purchases spread unevenly (a few heavy buyers, many one-time ones), 90 % in EUR, over
two years before `as_of`. Then, in this process, each `--repeat` times:
- baseline: the plain aggregate over the same rows, streamed
  (SELECT contact_id, max(at), count(*), sum(amount) FROM contact_activity
   WHERE kind = 'purchase' GROUP BY contact_id);
- every scored contact: an RFM segment naming all eleven RFM segments, every member streamed
  (`sopflow.segmenting.members`);
- at_risk: the example segments/at_risk.yaml (two named segments and a tags rule), streamed.
Reports medians, the ratio to the baseline, and the growth of the process's peak RSS (VmHWM)
over what it was before the first query: streaming must keep it flat however many members.
Last, for scale, the baseline as a plain query (PostgreSQL runs cursors without parallel
workers and plans them for their first rows; a plain query gets a parallel scan).

    .venv/bin/python bench/bench_segments.py [--contacts 1000000] [--purchases 5000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sopflow.segmenting.files import load_segment  # noqa: E402
from sopflow.segmenting.query import STREAM_ROWS, compile_segment, members  # noqa: E402
from sopflow.segmenting.rfm import RFM_NAMES  # noqa: E402
from sopflow.segmenting.schema import Segment  # noqa: E402
from sopflow.store.repository import Store  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
GOAL_SECONDS = 30.0
BASELINE = text(
    "SELECT contact_id, max(at), count(*), sum(amount) FROM contact_activity "
    "WHERE kind = 'purchase' GROUP BY contact_id"
)


def memory_kib(field: str) -> int:
    """VmHWM (peak) or VmRSS (now) of this process, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def generate(engine: Engine, contacts: int, purchases: int) -> None:
    """The rows, made by the server. Contact ids are zero-padded so their order is numeric;
    a purchase's contact is drawn with random()^2, so low numbers buy often, most rarely."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO contacts (id, fields, updated_at) "
                "SELECT 'c' || lpad(g::text, 7, '0'), "
                "CASE WHEN g % 10 = 0 THEN json_build_object('tags', json_build_array('vip')) "
                "WHEN g % 37 = 0 THEN json_build_object('tags', json_build_array('do_not_market')) "
                "ELSE json_build_object('first_name', 'Ann') END, now() "
                "FROM generate_series(1, :n) AS g"
            ),
            {"n": contacts},
        )
        connection.execute(
            text(
                "INSERT INTO contact_activity (contact_id, kind, key, at, amount, currency) "
                "SELECT 'c' || lpad((1 + floor(:n * random() ^ 2))::int::text, 7, '0'), "
                "'purchase', 'order:' || g, "
                ":as_of - random() * interval '730 days', "
                "round((1 + random() * 300)::numeric, 2), "
                "CASE WHEN random() < 0.9 THEN 'EUR' ELSE 'USD' END "
                "FROM generate_series(1, :m) AS g"
            ),
            {"n": contacts, "m": purchases, "as_of": AS_OF},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE contacts, contact_activity"))


def stream_baseline(engine: Engine) -> int:
    count = 0
    with engine.connect() as connection:
        streamed = connection.execution_options(stream_results=True, yield_per=STREAM_ROWS)
        for _ in streamed.execute(BASELINE):
            count += 1
    return count


def fetch_all(engine: Engine) -> int:
    with engine.connect() as connection:
        return len(connection.execute(BASELINE).all())


def timed(runs: int, work: Callable[[], int]) -> tuple[float, int, list[float]]:
    times, count = [], 0
    for _ in range(runs):
        began = time.perf_counter()
        count = work()
        times.append(time.perf_counter() - began)
    return statistics.median(times), count, times


def counted(ids: Iterable[str]) -> int:
    count = 0
    for _ in ids:
        count += 1
    return count


def explain(engine: Engine, name: str, query: str) -> None:
    """The plan PostgreSQL picks for `query` as a streamed (server-side cursor) query: it plans
    cursors for their first rows (cursor_tuple_fraction), which may not be the plan a plain
    query gets."""
    print(f"plan of {name} (as a cursor):")
    with engine.begin() as connection:
        for (line,) in connection.execute(text(f"EXPLAIN DECLARE plan_cursor CURSOR FOR {query}")):
            print("   ", line)


def segment_sql(engine: Engine, segment: Segment) -> str:
    query = compile_segment(segment, "postgresql", AS_OF).select
    return str(query.compile(engine, compile_kwargs={"literal_binds": True}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--purchases", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", default=POSTGRES)
    parser.add_argument("--explain", action="store_true", help="print the streamed queries' plans")
    args = parser.parse_args()

    schema = f"bench_segments_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(args.url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        Store(engine).migrate()
        began = time.perf_counter()
        generate(engine, args.contacts, args.purchases)
        print(
            f"generated {args.contacts:,} contacts and {args.purchases:,} purchases in "
            f"{time.perf_counter() - began:.0f} s (schema {schema})",
            flush=True,
        )
        everyone = Segment.model_validate(
            {
                "id": "every_scored",
                "name": "Every scored contact",
                "description": "all eleven named RFM segments",
                "rules": {"rfm": {"currency": "EUR", "segments": list(RFM_NAMES)}},
            }
        )
        at_risk, _ = load_segment(ROOT / "segments" / "at_risk.yaml")
        if args.explain:
            explain(engine, "baseline", str(BASELINE))
            for segment in (everyone, at_risk):
                explain(engine, segment.id, segment_sql(engine, segment))
        peak_before, rss_before = memory_kib("VmHWM"), memory_kib("VmRSS")
        results: dict[str, tuple[float, int, list[float]]] = {}
        results["baseline"] = timed(args.repeat, lambda: stream_baseline(engine))
        for segment in (everyone, at_risk):
            results[segment.id] = timed(
                args.repeat, lambda s=segment: counted(members(engine, s, AS_OF))
            )
        growth = (memory_kib("VmHWM") - peak_before) / 1024
        base = results["baseline"][0]
        for name, (median, count, times) in results.items():
            runs = ", ".join(f"{t:.2f}" for t in times)
            ratio = "" if name == "baseline" else f", {median / base:.2f}× the baseline"
            verdict = (
                ""
                if name == "baseline"
                else (
                    "  (goal < 30 s: met)" if median < GOAL_SECONDS else "  (goal < 30 s: NOT met)"
                )
            )
            print(
                f"{name:<13} {count:>9,} rows streamed in {median:6.2f} s median ({runs})"
                f"{ratio}{verdict}"
            )
        print(
            f"peak RSS growth over all {3 * args.repeat} runs: {growth:.1f} MiB "
            f"(RSS before {rss_before / 1024:.0f} MiB, after {memory_kib('VmRSS') / 1024:.0f} MiB)"
        )
        # Last, as it holds every row at once: the aggregate as a plain query. PostgreSQL plans
        # a cursor for its first rows and never runs one in parallel, so streamed it walks the
        # (contact_id, kind, key) index; plain it scans in parallel and hashes.
        plain, _, times = timed(args.repeat, lambda: fetch_all(engine))
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"baseline as a plain query (every row fetched at once, not streamed): {plain:.2f} s "
            f"median ({runs}); every_scored is {results[everyone.id][0] / plain:.2f}× that"
        )
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
