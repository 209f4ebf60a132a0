"""Runs are found by what they are about (workflows/search_attributes.py): SopRun upserts its
SOP, version, contact, rep, status and what it waits for; Temporal's list query, its CLI and a
worker's start-up check all see them, on a real dev server."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeIndexedValueType, TypedSearchAttributes
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.sop_activities import SopActivities
from activities.store_effects import StoreEffects
from sopflow.asgi import free_port
from sopflow.enrolment import enrolment_for, start_enrolment
from sopflow.errors import ConfigurationError
from sopflow.providers.loopback import LoopbackProvider
from sopflow.runtime import check_search_attributes, connect_client
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.schema import WEEKDAYS, ContactPolicy
from sopflow.sop.validate import load_plan
from sopflow.store import listing
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory
from sopflow.up import temporal_cli
from workflows.contracts import (
    ControlSignal,
    OutcomeAnswer,
    OutcomeRequest,
    SopRunInput,
    SopRunResult,
)
from workflows.sandbox import workflow_runner
from workflows.search_attributes import (
    CONTACT_ID,
    KEYS,
    REP,
    RUN_STATUS,
    SOP_ID,
    SOP_VERSION,
    WAITING_FOR,
    RunStatus,
    WaitingFor,
    create_commands,
    dev_server_args,
    missing,
)
from workflows.sop_run import SopRun

ROOT = Path(__file__).resolve().parents[2]
TEAMS = [
    {
        "id": "inside_sales",
        "reps": [
            {"id": "ana", "name": "Ana Lima", "phone": "+12125550101"},
            {"id": "ben", "name": "Ben Ortiz", "phone": "+12125550102"},
        ],
    }
]
Handle = WorkflowHandle[Any, SopRunResult]
# Upserts on start, on waiting for a rep, on a pause and a resume, and at the end: replayed by
# test_replay.py so a later change to when they happen needs a patch of its own.
HISTORY = "new_lead_callback_search_attributes"
KEYWORD = SearchAttributeIndexedValueType.KEYWORD


# ------------------------------------------------------------------ the vocabulary, registration
def test_the_values_are_the_run_listings_words() -> None:
    """A query in Temporal and a filter of GET /api/v1/runs mean the same."""
    assert get_args(RunStatus) == get_args(listing.RunStatus)
    assert get_args(WaitingFor) == get_args(listing.WaitingFor)


def test_the_dev_server_flags_and_the_cluster_commands() -> None:
    assert dev_server_args() == [
        "--search-attribute", "SopId=Keyword",
        "--search-attribute", "SopVersion=Int",
        "--search-attribute", "ContactId=Keyword",
        "--search-attribute", "Rep=KeywordList",
        "--search-attribute", "RunStatus=Keyword",
        "--search-attribute", "WaitingFor=Keyword",
    ]  # fmt: skip
    assert create_commands("prod", [SOP_ID, SOP_VERSION, REP], address="tc:7233") == [
        "temporal operator search-attribute create --address tc:7233 --namespace prod "
        "--name SopId --type Keyword",
        "temporal operator search-attribute create --address tc:7233 --namespace prod "
        "--name SopVersion --type Int",
        "temporal operator search-attribute create --address tc:7233 --namespace prod "
        "--name Rep --type KeywordList",
    ]
    assert len(create_commands("prod")) == len(KEYS)


def test_missing_counts_an_attribute_of_another_type_as_missing() -> None:
    registered = {key.name: key.indexed_value_type for key in KEYS}
    assert missing(registered) == []
    assert missing({**registered, "Rep": KEYWORD}) == [REP]
    del registered["SopVersion"]
    assert missing(registered) == [SOP_VERSION]


# ------------------------------------------------------------------ runs on the dev server
def any_hour(plan: Plan) -> Plan:
    """No contact windows or holidays: the test does not depend on the wall-clock hour."""
    return compile_plan(
        plan.sop.model_copy(update={"policy": ContactPolicy(business_days=list(WEEKDAYS))})
    )


async def eventually(read: Callable[[], Any], wanted: Callable[[Any], bool], what: str) -> Any:
    """Visibility is eventually consistent: poll (a few seconds at most on the dev server)."""
    for _ in range(100):
        got = await read()
        if wanted(got):
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: still {got!r}")


async def attributes(handle: Handle) -> TypedSearchAttributes:
    return (await handle.describe()).typed_search_attributes


async def listed(env: WorkflowEnvironment, query: str) -> set[str]:
    return {w.id async for w in env.client.list_workflows(query)}


def cli_list(env: WorkflowEnvironment, query: str) -> set[str]:
    """`temporal workflow list --query` as an operator types it."""
    out = subprocess.run(
        [temporal_cli(), "workflow", "list", "--address",
         env.client.service_client.config.target_host, "--query", query, "--output", "jsonl"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return {json.loads(line)["execution"]["workflowId"] for line in out.stdout.splitlines()}


def callback_store(tmp_path: Path) -> tuple[Plan, Store]:
    plan = any_hour(load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml"))
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.deploy(plan)
    RepDirectory(store.engine).import_teams(TEAMS)
    return plan, store


def store_worker(env: WorkflowEnvironment, task_queue: str, store: Store) -> Worker:
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(StoreEffects(store, LoopbackProvider())).all(),
        workflow_runner=workflow_runner(),
        # Named: the SDK's default hashes every loaded module (scipy included), ~50 s here.
        build_id="test-search-attributes",
    )


async def test_runs_are_found_by_sop_and_rep_and_show_what_they_wait_for(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    plan, store = callback_store(tmp_path)
    contacts = [{"id": f"c-{n}", "phone": f"+1212555012{n}"} for n in (1, 2)]
    enrolments = [enrolment_for(plan, c, task_queue) for c in contacts]
    async with store_worker(live_env, task_queue, store):
        handles: list[Handle] = []
        for enrolment in enrolments:  # round robin: c-1 to ana, then c-2 to ben
            store.upsert_contact(enrolment.contact)
            await start_enrolment(live_env.client, enrolment, "lead.created", {}, task_queue)
            handle: Handle = live_env.client.get_workflow_handle(
                enrolment.workflow_id, result_type=SopRunResult
            )
            await eventually(
                lambda h=handle: attributes(h),
                lambda a: a.get(WAITING_FOR) == "rep",
                f"{enrolment.workflow_id} waiting for its rep",
            )
            handles.append(handle)
        ana, ben = handles
        shown = await attributes(ana)
        assert shown.get(SOP_ID) == "new_lead_callback"
        assert shown.get(SOP_VERSION) == plan.sop.version
        assert shown.get(CONTACT_ID) == "c-1"
        assert shown.get(REP) == ["ana"] and shown.get(RUN_STATUS) == "running"
        assert (await attributes(ben)).get(REP) == ["ben"]
        # Scoped to this test's runs: the session's server holds other tests' runs too.
        mine = f"WorkflowId STARTS_WITH 'sop:new_lead_callback:' AND TaskQueue = '{task_queue}'"
        query = f"SopId='new_lead_callback' AND Rep='ana' AND {mine}"
        found = await eventually(
            lambda: listed(live_env, query), lambda ids: bool(ids), "the query for ana's runs"
        )
        assert found == {ana.id}  # not ben's run
        assert cli_list(live_env, query) == {ana.id}
        assert cli_list(live_env, f"Rep='ben' AND WaitingFor='rep' AND {mine}") == {ben.id}

        await ana.signal("control", ControlSignal(action="pause", actor="sam"))
        await eventually(
            lambda: attributes(ana), lambda a: a.get(WAITING_FOR) == "resume", "paused"
        )
        await ana.signal("control", ControlSignal(action="resume", actor="sam"))
        await eventually(lambda: attributes(ana), lambda a: a.get(WAITING_FOR) == "rep", "resumed")
        answer = await ana.execute_update(
            "report_outcome",
            OutcomeRequest(step="first_call", outcome="not_interested", actor="ana"),
            result_type=OutcomeAnswer,
        )
        assert answer.accepted
        assert (await ana.result()).result == "lost"
        done = await attributes(ana)
        assert done.get(RUN_STATUS) == "finished" and done.get(WAITING_FOR) is None
        assert done.get(REP) == ["ana"]  # the last assigned, once no task is open
        finished = f"RunStatus='finished' AND Rep='ana' AND {mine}"
        assert await eventually(lambda: listed(live_env, finished), bool, "finished") == {ana.id}
        if os.environ.get("SOPFLOW_SAVE_HISTORY"):  # a run with the patch, for tests/replay
            history = await ana.fetch_history()
            (ROOT / "tests" / "replay" / f"{HISTORY}.json").write_text(history.to_json())
        await ben.terminate("done with the test")


async def test_a_continued_run_keeps_its_rep(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """The rep is known from an activity's answer, which a continued run has not seen: it
    reads the rep back from its own attributes, or a query by rep would lose the run."""
    plan, store = callback_store(tmp_path)
    enrolment = enrolment_for(plan, {"id": "c-9", "phone": "+12125550129"}, task_queue)
    store.upsert_contact(enrolment.contact)
    async with store_worker(live_env, task_queue, store):
        handle: Handle = await live_env.client.start_workflow(
            SopRun.run,
            SopRunInput(
                plan=plan, contact=enrolment.contact, zones=enrolment.zones,
                trigger="lead.created", continue_every=1,
            ),
            id=enrolment.workflow_id,
            task_queue=task_queue,
        )  # fmt: skip
        await eventually(
            lambda: attributes(handle), lambda a: a.get(WAITING_FOR) == "rep", "waiting for ana"
        )
        # Pause: a new event, so the run continues as new after it (continue_every=1).
        await handle.signal("control", ControlSignal(action="pause", actor="sam"))
        described = await eventually(
            handle.describe,
            lambda d: (
                d.run_id != handle.first_execution_run_id
                and d.typed_search_attributes.get(WAITING_FOR) == "resume"
            ),
            "a continued, paused run",
        )
        assert described.typed_search_attributes.get(REP) == ["ana"]
        assert described.typed_search_attributes.get(SOP_ID) == "new_lead_callback"
        await handle.terminate("done with the test")


# ------------------------------------------------------------------ the worker's check
async def test_a_worker_refuses_a_namespace_without_them_in_one_line(
    live_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = live_env.client
    namespace = f"bare-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    address = client.service_client.config.target_host
    bare = await connect_client(address, namespace=namespace)

    async def add_some() -> None:  # one right, one of another type (a Keyword, not a list)
        keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        await bare.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace, search_attributes={"SopId": keyword, "Rep": keyword}
            )
        )

    for _ in range(100):  # a new namespace takes a moment to be known to every service
        try:
            await add_some()
            break
        except RPCError:  # NotFound until the namespace cache refreshes
            await asyncio.sleep(0.2)
    variables = os.environ | {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": namespace,
        "SOPFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "SOPFLOW_DATA_DIR": str(tmp_path / "data"),
        "SOPFLOW_TASK_QUEUE": f"test-{uuid.uuid4()}",
    }
    worker = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "worker.py"], cwd=ROOT, env=variables, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert worker.returncode == 2, worker.stdout + worker.stderr
    lines = [
        line for line in (worker.stdout + worker.stderr).splitlines() if "cannot start" in line
    ]
    commands = create_commands(namespace, [k for k in KEYS if k.name != "SopId"])
    assert len(lines) == 1 and lines[0].endswith(
        f"cannot start: Temporal namespace {namespace!r} lacks the search attributes "
        "SopVersion (Int), ContactId (Keyword), Rep (KeywordList, not Keyword: remove that one "
        "first), RunStatus (Keyword), "
        f"WaitingFor (Keyword): create them with `{'; '.join(commands)}` "
        "(Temporal Cloud: docs/temporal-cluster.md)"
    ), lines
    assert "Traceback" not in worker.stdout + worker.stderr
    # What it says is the fix: remove the wrong one, run the commands, and the check passes.
    cli = [temporal_cli(), "operator", "search-attribute"]
    remove = [*cli, "remove", "--address", address, "--namespace", namespace, "--name", "Rep"]
    await run(*remove, "--yes")
    for command in create_commands(namespace, [k for k in KEYS if k.name != "SopId"], address):
        argv = shlex.split(command)
        await run(temporal_cli(), *argv[1:])
    await eventually(lambda: _check(bare), lambda ok: ok, "the check after creating them")


async def run(*argv: str) -> None:
    await asyncio.to_thread(subprocess.run, argv, check=True, capture_output=True, timeout=30)


async def _check(client: Client) -> bool:
    try:
        await check_search_attributes(client)
    except ConfigurationError:  # the search attributes' cache refreshes in a moment
        return False
    return True


# ------------------------------------------------------------------ `sopflow up`
QUICK_CALL = """\
id: quick_call
version: 1
name: Quick call
owner: qa
entry: {events: [lead.created]}
steps:
  - id: call_lead
    kind: task
    title: Call
    due_within: 30m
    assign: {strategy: round_robin, team: inside_sales}
    outcomes: [connected]
    on_outcome: {connected: won}
  - {id: won, kind: end, result: converted}
"""


class Up:
    """`sopflow up` in a subprocess on `tmp`'s data dir (a second one reuses the database)."""

    def __init__(self, tmp: Path, sops: Path) -> None:
        self.temporal = f"127.0.0.1:{free_port()}"
        self.base = f"http://127.0.0.1:{free_port()}"
        ports = {
            "--port": self.base.rsplit(":", 1)[1],
            "--temporal-port": self.temporal.rsplit(":", 1)[1],
            "--ui-port": str(free_port()),
            "--sandbox-port": str(free_port()),
            "--smtp-port": str(free_port()),
        }
        self.log = tmp / f"up-{uuid.uuid4().hex[:6]}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from sopflow.cli import main; main()", "up",
                 "--sops", str(sops), "--teams", str(ROOT / "examples" / "teams.yaml"),
                 *(arg for pair in ports.items() for arg in pair)],
                cwd=ROOT, env=os.environ | {"SOPFLOW_DATA_DIR": str(tmp / "data")},
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        for _ in range(300):
            try:
                if httpx.get(f"{self.base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            self.stop()
            raise AssertionError(self.log.read_text())
        token = (tmp / "data" / "api_token").read_text().strip()
        self.auth = {"Authorization": f"Bearer {token}"}

    def query(self, query: str, tries: int = 100) -> set[str]:
        """`temporal workflow list --query` against this stack's server, until it finds runs."""
        for _ in range(tries):
            out = subprocess.run(
                [temporal_cli(), "workflow", "list", "--address", self.temporal,
                 "--query", query, "--output", "jsonl"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr  # an unknown attribute is an error
            found = {
                json.loads(line)["execution"]["workflowId"] for line in out.stdout.splitlines()
            }
            if found:
                return found
            time.sleep(0.1)
        return set()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


@pytest.mark.slow  # two starts of the whole stack (~40 s here)
def test_sopflow_up_registers_them_and_a_restart_keeps_them(tmp_path: Path) -> None:
    sops = tmp_path / "sops"
    sops.mkdir()
    (sops / "quick_call.yaml").write_text(QUICK_CALL)
    event = {
        "type": "lead.created",
        "contact": {"id": "c-1", "phone": "+12125550123"},
        "idempotency_key": "k1",
    }
    first = Up(tmp_path, sops)
    try:
        enrolled = httpx.post(f"{first.base}/api/v1/events", json=event, headers=first.auth)
        assert enrolled.status_code == 202, enrolled.text
        run_id = enrolled.json()["enrolled"][0]["run_id"]
        assert first.query("SopId='quick_call' AND Rep='ana' AND WaitingFor='rep'") == {run_id}
    finally:
        assert first.stop() == 0, first.log.read_text()
    again = Up(tmp_path, sops)  # the same database: registering again is a no-op
    try:
        assert again.query("SopId='quick_call' AND RunStatus='running'") == {run_id}
        assert again.query("Rep='ben'", tries=1) == set()
    finally:
        assert again.stop() == 0, again.log.read_text()
