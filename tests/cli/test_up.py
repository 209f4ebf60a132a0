"""`sopflow up` as a user runs it: one foreground command, an API that enrols, Ctrl-C, restart."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from html import escape
from pathlib import Path

import httpx
import pytest

from sopflow.asgi import free_port
from sopflow.gateway.auth import CSRF_FIELD, SESSION_COOKIE
from sopflow.gateway.signin import SIGNIN_COOKIE
from sopflow.sandbox.server import SANDBOX_ACCOUNT
from sopflow.up import port_taken

ROOT = Path(__file__).resolve().parents[2]
SOP = """\
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
    outcomes: [connected, booked]
    on_outcome: {booked: won}
  - {id: lost, kind: end, result: lost}
  - {id: won, kind: end, result: converted}
"""
MAIL_SOP = """\
id: welcome_mail
version: 1
name: Welcome mail
owner: qa
purpose: service
entry: {events: [newsletter.signed_up]}
steps:
  - id: welcome
    kind: email
    subject: "Welcome, {{ contact.first_name | default('friend') }}"
    body: "Thanks for signing up."
"""


def sopflow(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from sopflow.cli import main; main()", *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
        env=os.environ | {"SOPFLOW_DATA_DIR": str(tmp / "data")},
    )


def test_cli_errors_without_a_gateway_or_a_run(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "api_token").write_text("t")
    port = free_port()
    unreachable = sopflow(
        tmp_path,
        "events",
        "send",
        "lead.created",
        "--key",
        "k",
        "--contact",
        "id=c",
        "--api",
        f"http://127.0.0.1:{port}",
    )
    assert unreachable.returncode == 1 and "cannot reach the gateway" in unreachable.stderr
    unknown = sopflow(tmp_path, "runs", "show", "nope")
    assert unknown.returncode == 1 and "unknown run 'nope'" in unknown.stderr
    empty = sopflow(tmp_path, "runs", "list")
    assert empty.returncode == 0 and "no runs" in empty.stdout


def test_reps_import_and_list(tmp_path: Path) -> None:
    imported = sopflow(tmp_path, "reps", "import", str(ROOT / "examples" / "teams.yaml"))
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 teams, 4 reps" in imported.stdout
    listed = json.loads(sopflow(tmp_path, "reps", "list", "--json").stdout)
    assert [r["id"] for r in listed] == ["ana", "ben", "cho", "sam"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("teams: [{id: t, reps: [{id: a, name: A, phone: '555'}]}]", "invalid phone number '555'"),
        ("teams: [{id: t, supervisor: ghost, reps: [{id: a, name: A}]}]", "supervisor 'ghost'"),
        (
            "teams: [{id: t, reps: [{id: a, name: A}]}, {id: u, reps: [{id: a, name: B}]}]",
            "rep 'a' is listed in more than one place",
        ),
        ("teams: [{id: t, colour: red}]", "teams.0.colour: Extra inputs are not permitted"),
        ("teams: [", "not valid YAML"),
        (
            "teams: [{id: t, reps: [{id: a, name: A, max_tasks_per_day: 0}]}]",
            "teams.0.reps.0.max_tasks_per_day: Input should be greater than or equal to 1",
        ),
    ],
)
def test_a_bad_teams_file_is_one_line_and_changes_nothing(
    tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "teams.yaml"
    bad.write_text(content)
    result = sopflow(tmp_path, "reps", "import", str(bad))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "no reps" in sopflow(tmp_path, "reps", "list").stdout
    missing = sopflow(tmp_path, "reps", "import", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_report_compliance_formats_and_bad_options(tmp_path: Path) -> None:
    empty = sopflow(tmp_path, "report", "compliance")
    assert empty.returncode == 0 and "no runs to score" in empty.stdout
    assert json.loads(sopflow(tmp_path, "report", "compliance", "--json").stdout) == []
    csv_out = sopflow(tmp_path, "report", "compliance", "--csv", "--by", "team").stdout
    assert csv_out.splitlines() == [
        "group,runs,on_time,late,missed,excused,pending,violations,sla_met,sla_judged,score"
    ]
    for args, message in (
        (["--by", "colour"], "--by 'colour': use one of rep, team"),
        (["--since", "yesterday-ish"], "use an ISO date"),
        (["--json", "--csv"], "choose --json or --csv"),
    ):
        bad = sopflow(tmp_path, "report", "compliance", *args)
        assert bad.returncode == 1 and message in bad.stderr, bad.stderr
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "sandbox_token").write_text("t")  # as `sopflow up` leaves it
    down = sopflow(tmp_path, "sandbox", "inbox", "+12125550101", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "is `sopflow up` running?" in down.stderr
    missing = sopflow(tmp_path, "report", "run", "nope")
    assert missing.returncode == 1 and "unknown run 'nope'" in missing.stderr


def test_report_of_a_recorded_run(tmp_path: Path) -> None:
    """A run recorded in the data dir's store: the table, the CSV and the run's reasons."""
    from datetime import UTC, datetime, timedelta

    from sopflow.sop.protocol import AssignTask, Record
    from sopflow.sop.simulator import Script, ScriptedOutcome, simulate
    from sopflow.sop.validate import load_plan
    from sopflow.store.repository import Store, connect

    plan = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
    (tmp_path / "data").mkdir()
    store = Store(connect(f"sqlite:///{tmp_path / 'data' / 'sopflow.db'}"))
    store.migrate()
    store.deploy(plan)
    start = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    late = Script(outcomes={"first_call": [ScriptedOutcome("connected", timedelta(minutes=50))]})
    sim = simulate(plan, {"id": "c-1", "phone": "+12125550123"}, start, late)
    store.start_run("run-1", "r", plan.sop.id, 1, plan.digest, "c-1", start)
    for command in sim.commands:
        actor = "ana" if isinstance(command, AssignTask) else None
        store.record_command("run-1", "r", command, actor=actor)
    receipt = Record(
        at=start + timedelta(hours=30), step="retry_calls", key="provider_status@99.0",
        action="provider_status",
        detail={"key": "retry_calls:1:2:f0", "status": "delivered", "provider": {"sid": "SM1"}},
    )  # fmt: skip
    store.record_command("run-1", "r", receipt)
    store.engine.dispose()
    table = sopflow(tmp_path, "report", "compliance", "--by", "rep")
    assert table.returncode == 0, table.stderr
    (ana,) = [line for line in table.stdout.splitlines() if line.startswith("ana")]
    assert ana.split() == ["ana", "1", "0", "1", "0", "0", "0", "0/1", "50.0"]
    csv_out = sopflow(tmp_path, "report", "compliance", "--by", "sop", "--csv").stdout
    assert csv_out.splitlines()[1] == "new_lead_callback,1,0,1,0,0,0,0,0,1,50.0"
    run = sopflow(tmp_path, "report", "run", "run-1")
    assert "score 50.0, SLA met: False" in run.stdout
    shown = sopflow(tmp_path, "runs", "show", "run-1").stdout
    assert "status=delivered for retry_calls:1:2:f0" in shown  # the carrier's receipt, readable
    assert "outcome 'connected' reported 20m after it was due" in run.stdout


def test_dnc_import_and_check(tmp_path: Path) -> None:
    listed = tmp_path / "dnc.csv"
    listed.write_text("phone\n+12125550123\n+33142685300\n")
    imported = sopflow(tmp_path, "dnc", "import", str(listed), "--list", "national")
    assert imported.returncode == 0, imported.stderr
    assert "added 2 new numbers to the 'national' list" in imported.stdout
    on = sopflow(tmp_path, "dnc", "check", "+12125550123")
    assert on.returncode == 1 and "is on the 'national' list" in on.stdout
    off = sopflow(tmp_path, "dnc", "check", "+12125550199")
    assert off.returncode == 0 and "is on no list" in off.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("+12125550100\nnot-a-number-123\n")
    refused = sopflow(tmp_path, "dnc", "import", str(bad))
    assert refused.returncode == 1 and "line 2: invalid phone number" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sopflow(tmp_path, "dnc", "check", "+12125550100").returncode == 0  # nothing imported
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"t\xe9l\xe9phone\n+33142685300\n")
    garbled = sopflow(tmp_path, "dnc", "import", str(latin))
    assert garbled.returncode == 1 and "not UTF-8 text" in garbled.stderr
    assert "Traceback" not in garbled.stderr
    assert "invalid phone number" in sopflow(tmp_path, "dnc", "check", "12").stderr


class Up:
    def __init__(self, tmp: Path, sops: Path) -> None:
        self.port, temporal, ui = free_port(), free_port(), free_port()
        self.temporal_port = temporal
        self.sandbox = f"http://127.0.0.1:{free_port()}"
        self.log = tmp / f"up-{time.monotonic_ns()}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from sopflow.cli import main; main()",
                    "up",
                    "--sops",
                    str(sops),
                    "--port",
                    str(self.port),
                    "--temporal-port",
                    str(temporal),
                    "--ui-port",
                    str(ui),
                    "--sandbox-port",
                    self.sandbox.rsplit(":", 1)[1],
                    "--smtp-port",
                    str(free_port()),
                    "--teams",
                    str(ROOT / "examples" / "teams.yaml"),
                ],
                cwd=ROOT,
                env=os.environ | {"SOPFLOW_DATA_DIR": str(tmp / "data")},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                if httpx.get(f"{self.base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            self.stop()
            raise AssertionError(self.log.read_text())
        self.auth = {"Authorization": f"Bearer {(tmp / 'data' / 'api_token').read_text().strip()}"}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def dashboard_page(base: str, user: str, password_file: Path) -> int:
    """Sign in through /signin's form as a browser would, then open /dashboard: its status."""
    session = sign_in(base, user, password_file)
    page = httpx.get(f"{base}/dashboard", headers={"Cookie": f"{SESSION_COOKIE}={session}"})
    return page.status_code


def sign_in(base: str, user: str, password_file: Path) -> str:
    """Sign in through /signin's form as a browser would: the session cookie.
    (httpx keeps Secure cookies away from http://; a browser sends them to 127.0.0.1.)"""
    form = httpx.get(f"{base}/signin")
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', form.text)
    assert csrf is not None, form.text
    fields = {CSRF_FIELD: csrf[1], "next": "/dashboard", "user": user,
              "password": password_file.read_text().strip()}  # fmt: skip
    signed_in = httpx.post(
        f"{base}/signin",
        data=fields,
        headers={"Cookie": f"{SIGNIN_COOKIE}={form.cookies[SIGNIN_COOKIE]}"},
    )
    assert signed_in.status_code == 303, signed_in.text
    return signed_in.cookies[SESSION_COOKIE]


def test_up_enrols_stops_cleanly_and_keeps_runs_across_a_restart(tmp_path: Path) -> None:
    sops = tmp_path / "sops"
    sops.mkdir()
    (sops / "quick_call.yaml").write_text(SOP)
    (sops / "welcome_mail.yaml").write_text(MAIL_SOP)
    first = Up(tmp_path, sops)
    try:
        event = {
            "type": "lead.created",
            "contact": {"id": "c-1", "phone": "+12125550123"},
            "idempotency_key": "k1",
        }
        enrolled = httpx.post(f"{first.base}/api/v1/events", json=event, headers=first.auth)
        assert enrolled.status_code == 202, enrolled.text
        run_id = enrolled.json()["enrolled"][0]["run_id"]
        for _ in range(100):
            steps = (
                httpx.get(f"{first.base}/api/v1/runs/{run_id}", headers=first.auth)
                .json()
                .get("steps", [])
            )
            if any(s["action"] == "assign" for s in steps):
                break
            time.sleep(0.1)
        sent = sopflow(
            tmp_path,
            "events",
            "send",
            "lead.created",
            "--key",
            "k2",
            "--contact",
            "id=c-2",
            "--contact",
            "phone=+12125550199",
            "--api",
            first.base,
        )
        assert sent.returncode == 0, sent.stderr
        assert "sop:quick_call:c-2:k2" in sent.stdout
        bad = sopflow(
            tmp_path,
            "events",
            "send",
            "lead.created",
            "--key",
            "k3",
            "--contact",
            "id=c-3",
            "--contact",
            "phone=+1555",
            "--api",
            first.base,
        )
        assert (
            bad.returncode == 1 and "422: contact 'c-3': invalid phone number '+1555'" in bad.stderr
        )
        listed = json.loads(sopflow(tmp_path, "runs", "list", "--json").stdout)
        assert {r["run_id"] for r in listed} == {run_id, "sop:quick_call:c-2:k2"}
        shown = json.loads(sopflow(tmp_path, "runs", "show", run_id, "--json").stdout)
        assert shown["sop"] == "quick_call" and shown["steps"][0]["action"] == "enrolled"
        assign = next(s for s in shown["steps"] if s["action"] == "assign")
        assert assign["actor"] == "ana" and assign["detail"]["notified"] == "ana"
        # The rep's notice went through Twilio's API (the real SDK) to the sandbox network, which
        # shows it only to its account (the token `sopflow up` keeps in the data dir).
        ann_inbox = f"{first.sandbox}/sandbox/numbers/+12125550101/messages"
        assert httpx.get(ann_inbox).status_code == 401
        sandbox_auth = (SANDBOX_ACCOUNT, (tmp_path / "data" / "sandbox_token").read_text().strip())
        inbox = httpx.get(ann_inbox, auth=sandbox_auth).json()
        assert inbox and "Call" in inbox[0]["body"] and inbox[0]["from"] == "+15005550006"
        assert inbox[0]["sid"] == assign["detail"]["provider_id"]
        # The sandbox pages open to the ops user's browser session, as the dashboard does.
        session = sign_in(first.base, "ops", tmp_path / "data" / "ops_password")
        ops = {"Cookie": f"{SESSION_COOKIE}={session}"}
        page = httpx.get(f"{first.base}/sandbox/+12125550101", headers=ops)
        assert f"{first.base}/inbox/task?run=" in inbox[0]["body"]  # the notice links the task
        assert page.status_code == 200 and escape(inbox[0]["body"]) in page.text
        csrf = re.search(rf'name={CSRF_FIELD} value="([^"]+)"', page.text)
        assert csrf is not None, page.text
        token = first.auth["Authorization"].removeprefix("Bearer ")
        for signed_out in ({}, {"token": token}):  # the API token in the URL opens nothing
            to_signin = httpx.get(f"{first.base}/sandbox/+12125550101", params=signed_out)
            assert to_signin.status_code == 303
            assert to_signin.headers["location"].startswith("/signin?next=")
        replied = httpx.post(
            f"{first.base}/sandbox/+12125550101/reply",
            data={"text": "on it", CSRF_FIELD: csrf[1]},
            headers=ops,
        )
        assert replied.status_code == 303
        shown_inbox = sopflow(tmp_path, "sandbox", "inbox", "+12125550101", "--url", first.sandbox)
        assert shown_inbox.returncode == 0 and inbox[0]["body"] in shown_inbox.stdout
        assert "on it" in shown_inbox.stdout  # the reply typed on the page
        # The second lead texts STOP from their phone: a signed webhook, the consent record.
        stop = sopflow(tmp_path, "sandbox", "reply", "--from", "+12125550199", "STOP",
                       "--url", first.sandbox)  # fmt: skip
        assert stop.returncode == 0, stop.stderr
        consent = httpx.get(f"{first.base}/api/v1/contacts/c-2/consent", headers=first.auth).json()
        assert consent["channels"]["sms"]["action"] == "revoke"
        assert consent["history"][0]["method"] == "sms_stop"
        # An email through the sandbox mail server; its one-click unsubscribe reaches the gateway.
        signup = {"type": "newsletter.signed_up", "idempotency_key": "m1",
                  "contact": {"id": "c-9", "first_name": "Mia", "email": "mia@example.com"}}  # fmt: skip
        assert httpx.post(f"{first.base}/api/v1/events", json=signup, headers=first.auth).is_success
        for _ in range(100):
            mail = sopflow(tmp_path, "sandbox", "mail", "mia@example.com", "--url", first.sandbox)
            if "Welcome, Mia" in mail.stdout:
                break
            time.sleep(0.1)
        assert "#1" in mail.stdout and "Thanks for signing up." in mail.stdout, mail.stdout
        assert "Unsubscribe: http://127.0.0.1:" in mail.stdout
        page = httpx.get(f"{first.base}/sandbox/mail/mia@example.com", headers=ops)
        assert page.status_code == 200 and "Welcome, Mia" in page.text
        unsubscribed = sopflow(tmp_path, "sandbox", "unsubscribe", "1", "--url", first.sandbox)
        assert unsubscribed.returncode == 0 and "answered 200" in unsubscribed.stdout
        consent = httpx.get(f"{first.base}/api/v1/contacts/c-9/consent", headers=first.auth).json()
        assert consent["channels"]["email"]["action"] == "revoke"
        assert "sms" not in consent["channels"]  # email only
        missing = sopflow(tmp_path, "sandbox", "unsubscribe", "99", "--url", first.sandbox)
        assert missing.returncode == 1 and "no message 99" in missing.stderr
        # The dashboard: the first ops user `sopflow up` made signs in with the kept password.
        assert dashboard_page(first.base, "ops", (tmp_path / "data" / "ops_password")) == 200
    finally:
        assert first.stop() == 0
    output = first.log.read_text()
    assert "sopflow is up" in output and "Traceback" not in output
    assert f"sandbox: {first.base}/sandbox/+12125550123  (signed in as ops:" in output
    assert f"{first.base}/sandbox/mail/ann@example.com  (signed in as ops:" in output
    assert "token=" not in output  # no token in any address the banner prints
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700  # the store, Temporal's db, the secrets
    assert {stat.S_IMODE(f.stat().st_mode) for f in data.iterdir() if f.is_file()} == {0o600}

    second = Up(tmp_path, sops)  # same data dir: Temporal's SQLite file and the store
    try:
        # The sandboxes kept their texts and mail (<data dir>/sandbox.db), the reply typed too.
        kept = httpx.get(
            f"{second.sandbox}/sandbox/numbers/+12125550101/messages", auth=sandbox_auth
        )
        assert [m["sid"] for m in kept.json()][:1] == [inbox[0]["sid"]], kept.text
        assert "on it" in [m["body"] for m in kept.json()]
        mail = sopflow(tmp_path, "sandbox", "mail", "mia@example.com", "--url", second.sandbox)
        assert "#1" in mail.stdout and "Welcome, Mia" in mail.stdout, mail.stdout
        outcome = {"step": "call_lead", "outcome": "booked"}
        answer = httpx.post(
            f"{second.base}/api/v1/runs/{run_id}/outcomes", json=outcome, headers=second.auth
        )
        assert answer.status_code == 200, (
            answer.text
        )  # the run survived the restart and still waits
        for _ in range(100):
            run = httpx.get(f"{second.base}/api/v1/runs/{run_id}", headers=second.auth).json()
            if run["status"] == "finished":
                break
            time.sleep(0.1)
        assert run["result"] == "converted"
    finally:
        assert second.stop() == 0
    assert "unchanged" in second.log.read_text()  # redeploying the same SOP is a no-op


@pytest.mark.parametrize("taken", ["--port", "--temporal-port", "--smtp-port"])
def test_up_refuses_a_taken_port_in_one_line_and_starts_nothing(tmp_path: Path, taken: str) -> None:
    sops = tmp_path / "sops"
    sops.mkdir()
    (sops / "quick_call.yaml").write_text(SOP)
    ports = {flag: free_port() for flag in ("--port", "--temporal-port", "--ui-port",
                                            "--sandbox-port", "--smtp-port")}  # fmt: skip
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[taken]))
        holder.listen()
        started = time.monotonic()
        refused = sopflow(tmp_path, "up", "--sops", str(sops),
                          *[str(x) for pair in ports.items() for x in pair])  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == (
        f"error: port {ports[taken]} is taken: stop what listens there or choose another {taken}"
    )
    assert "sopflow is up" not in refused.stdout and time.monotonic() - started < 30
    assert not (tmp_path / "data" / "temporal.db").exists()  # no dev server was started


def test_a_killed_up_takes_its_temporal_server_with_it(tmp_path: Path) -> None:
    sops = tmp_path / "sops"
    sops.mkdir()
    (sops / "quick_call.yaml").write_text(SOP)
    stack = Up(tmp_path, sops)
    assert port_taken(stack.temporal_port)
    stack.process.kill()  # SIGKILL: no cleanup runs in `sopflow up` itself
    stack.process.wait(timeout=30)
    for _ in range(100):
        if not port_taken(stack.temporal_port):
            break
        time.sleep(0.2)
    assert not port_taken(stack.temporal_port), "the dev server outlived `sopflow up`"
