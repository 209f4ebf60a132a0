"""The `sopflow` command. User errors print one line and exit non-zero; never a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sopflow.errors import ConfigurationError, NotFoundError, SopflowError, SopValidationError
from sopflow.identity.cli import users_app
from sopflow.sop import clock
from sopflow.sop.plan import Plan
from sopflow.sop.schema import Sop
from sopflow.sop.segments import count_segments
from sopflow.sop.simulator import (
    Script,
    Simulation,
    key_value,
    parse_event_arg,
    parse_outcome_arg,
    sample_contact,
    simulate,
)
from sopflow.sop.validate import load_plan, validate_paths

app = typer.Typer(
    help="sopflow: sales SOPs as YAML, run durably, scored for compliance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
sop_app = typer.Typer(help="Author SOPs: validate, preview and compile them.", no_args_is_help=True)
app.add_typer(sop_app, name="sop")
runs_app = typer.Typer(
    help="Inspect runs: what each enrolment did, step by step.", no_args_is_help=True
)
app.add_typer(runs_app, name="runs")
reps_app = typer.Typer(help="Teams and reps who work the tasks SOPs assign.", no_args_is_help=True)
app.add_typer(reps_app, name="reps")
contacts_app = typer.Typer(
    help="Contacts and their purchases and visits, imported from your CRM.", no_args_is_help=True
)
app.add_typer(contacts_app, name="contacts")
events_app = typer.Typer(help="Send business events to a running gateway.", no_args_is_help=True)
app.add_typer(events_app, name="events")
dnc_app = typer.Typer(
    help="Do-not-contact lists: numbers no SOP may text or call.", no_args_is_help=True
)
app.add_typer(dnc_app, name="dnc")
report_app = typer.Typer(
    help="Reports: adherence (did reps and the system follow the SOPs, on time?) and the "
    "referral funnel.",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")
sandbox_app = typer.Typer(
    help="The sandboxes of `sopflow up`: read a number's inbox, reply from it; read a mailbox, "
    "unsubscribe from an email.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")
segments_app = typer.Typer(
    help="Segments (segments/*.yaml): contacts chosen by tags, fields, lifecycle stage, last "
    "activity and RFM; validate the files, preview who is in one.",
    no_args_is_help=True,
)
app.add_typer(segments_app, name="segments")
app.add_typer(users_app, name="users")
SANDBOX_URL = typer.Option(help="the sandbox's base URL", envvar="SOPFLOW_SANDBOX_URL")
# Not click choices: a bad value, from here or from the environment, gets sopflow's one line.
LOG_FORMAT = typer.Option(help="text or json lines (default: SOPFLOW_LOG_FORMAT, else text)")
LOG_LEVEL = typer.Option(help="debug, info, warning, error (default: SOPFLOW_LOG_LEVEL, else info)")

SEGMENTS_FOLDER = Annotated[
    Path | None,
    typer.Option(
        "--segments",
        help="the segment files segment conditions may name (default: segments/ beside the "
        "SOP folder, as beside sop_definitions/, else ./segments)",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn sopflow's own errors into one line on stderr and exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SopValidationError as exc:
            for problem in exc.problems:
                typer.echo(str(problem), err=True)
            raise typer.Exit(1) from None
        except SopflowError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


@sop_app.command("validate")
@user_errors
def validate_cmd(
    paths: Annotated[list[Path], typer.Argument(help="SOP files or folders of them")],
    segments: SEGMENTS_FOLDER = None,
) -> None:
    """Check SOP files; print FILE:LINE:COL: error: MESSAGE for every problem (exit 1 if any).
    A `segment:` / `not_segment:` condition must name a segment file of the segments folder.

    For each valid file, also print about how long each SMS body is and how many segments
    (billed SMS) it takes, rendered with the SOP's contact_fields examples: a single emoji,
    curly quote or Chinese character switches the whole text to UCS-2 (70 chars, not 160).
    """
    from sopflow.sop.sms_cost import sms_estimates

    plans, problems = validate_paths(paths, segments=segments)
    for problem in problems:
        typer.echo(str(problem), err=True)
    for path, plan in plans.items():
        typer.echo(f"ok {path}: {plan.sop.id} v{plan.sop.version} {plan.digest[:19]}")
        for estimate in sms_estimates(plan):
            typer.echo(f"   {estimate.describe()}")
    if problems:
        count = len(problems)
        typer.echo(f"{count} problem{'s' if count != 1 else ''} found", err=True)
        raise typer.Exit(1)


@sop_app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of SOP files (point your editor's YAML plugin at it)."""
    schema = Sop.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sopflow SOP"
    typer.echo(json.dumps(schema, indent=2))


def _one_sop_file(path: Path, command: str) -> Plan:
    """The plan of the one SOP file a command takes; a folder is a one-line error."""
    if path.is_dir():
        raise SopflowError(
            f"sop {command} takes one SOP file; {path} is a directory "
            f"(use `sopflow sop validate {path}` to check a folder)"
        )
    return load_plan(path)


@sop_app.command("compile")
@user_errors
def compile_cmd(path: Annotated[Path, typer.Argument(help="one SOP file")]) -> None:
    """Print the compiled plan (JSON) that runs are pinned to, with its digest."""
    plan = _one_sop_file(path, "compile")
    typer.echo(json.dumps(plan.model_dump(mode="json", by_alias=True), indent=2))


def _parse_start(text: str | None, zone_name: str) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise SopflowError(
            f"invalid --start {text!r}: use ISO 8601, e.g. 2026-12-01T09:10-05:00"
        ) from None
    if start.tzinfo is None:  # a naive start is the contact's local time
        start = start.replace(tzinfo=clock.zone(zone_name))
    return start.astimezone(UTC)


@sop_app.command("simulate")
@user_errors
def simulate_cmd(
    file: Annotated[Path, typer.Argument(help="one SOP file")],
    contact_tz: Annotated[
        str | None, typer.Option(help="the contact's time zone, e.g. Europe/Paris")
    ] = None,
    phone: Annotated[
        str | None, typer.Option(help="the contact's phone, E.164 (+12125550123)")
    ] = None,
    start: Annotated[str | None, typer.Option(help="enrolment time, ISO 8601; default now")] = None,
    outcome: Annotated[
        list[str] | None,
        typer.Option(
            help="STEP=OUTCOME[@DELAY][:k=v,...], repeatable; ladder attempts take them in order; "
            "k=v data is merged into the contact (e.g. the booked appointment)"
        ),
    ] = None,
    default_outcome: Annotated[
        str | None,
        typer.Option(
            help="outcome for steps not scripted (default: nobody reports, so tasks escalate)"
        ),
    ] = None,
    contact: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE contact field, repeatable")
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME@OFFSET[:k=v,...] contact event after the start, e.g. visited@2d, repeatable"
        ),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="STEP=ARM: the arm a split step takes, as assigned at enrolment "
            "(default: the hash of the contact id), repeatable"
        ),
    ] = None,
    segment: Annotated[
        list[str] | None,
        typer.Option(
            "--segment",
            "--in-segment",
            help="ID: the contact is in this segment when a branch routes by it (default: in "
            "none, as a contact with no history), repeatable",
        ),
    ] = None,
    rules_file: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="the organisation's contact rules (default: SOPFLOW_RULES); the law's table "
            "always applies, as in production",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='print JSON instead of a timeline; each sms event gets "segments": '
            '{"encoding", "units", "segments"}',
        ),
    ] = False,
) -> None:
    """Run an SOP on a virtual clock with scripted outcomes and print its timeline.

    The preview runs what production runs: the touch gate with the law's rules table (and
    SOPFLOW_RULES), footers the law appends, task due times counted inside the windows.
    Exit 1 when a scripted outcome could not be applied (it names why).

    Each SMS shows its length and segment count (what carriers bill) as rendered for this
    contact: one emoji or Chinese character makes it UCS-2, 70 chars a segment instead of 160.
    """
    plan = _one_sop_file(file, "simulate")
    given: dict[str, Any] = {}
    for pair in contact or []:
        key, value = key_value(pair, "--contact")
        given[key] = value.split(",") if key == "tags" else value
    if contact_tz:
        given["timezone"] = contact_tz
    if phone:
        given["phone"] = phone
    person = sample_contact(plan, given)
    zones, _ = clock.contact_zones(person, plan.sop.policy.timezone)
    script = Script(
        default_outcome=default_outcome, events=[parse_event_arg(e) for e in event or []]
    )
    for text in outcome or []:
        step, scripted = parse_outcome_arg(text)
        script.outcomes.setdefault(step, []).append(scripted)
    arms = dict(key_value(pair, "--variant") for pair in variant or [])
    from sopflow.compliance.rules import load_rules
    from sopflow.settings import Settings

    # The rules production's gate applies: the law's table and the organisation's own file.
    settings = Settings.from_env()
    rules = load_rules(rules_file or settings.rules_file)
    # Email's unsubscribe links as the gateway signs them (the data dir's key, or the env's).
    links = settings.unsubscribe_links(settings.public_url or "http://127.0.0.1:8000")
    start_at = _parse_start(start, zones[0])
    simulation = simulate(
        plan,
        person,
        start_at,
        script,
        zones,
        arms,
        rules=rules,
        links=links,
        segments=segment or (),
    )
    if as_json:
        typer.echo(json.dumps(simulation_json(simulation), indent=2, ensure_ascii=False))
    else:
        typer.echo(format_timeline(simulation))
    if simulation.dropped:  # the script said something production would refuse: say so, fail
        for line in simulation.dropped:
            typer.echo(f"warning: scripted outcome not applied: {line}", err=True)
        raise typer.Exit(1)


def simulation_json(simulation: Simulation) -> dict[str, Any]:
    """The simulation's JSON, each sms event with the segments its text takes."""
    data = simulation.to_json()
    for event in data["events"]:
        if event["action"] == "sms" and isinstance(event["detail"].get("text"), str):
            event["segments"] = count_segments(event["detail"]["text"]).to_json()
    return data


def _summary(action: str, detail: dict[str, Any], zone_name: str) -> str:
    def local(value: Any) -> str:
        return (
            datetime.fromisoformat(value)
            .astimezone(clock.zone(zone_name))
            .strftime("%a %d %b %H:%M")
        )

    if action == "sms" and isinstance(detail.get("text"), str):
        return f"“{detail['text']}” ({count_segments(detail['text']).describe()})"
    if action in ("sms", "whatsapp") and "text" in detail:
        return f"“{detail['text']}”"
    if action == "email" and "text" in detail:
        text = detail["text"].replace("\n", " ⏎ ")
        return f"to {detail['to']}, subject “{detail['subject']}”: “{text}”"
    if action == "call":
        return f"script: “{detail['script']}”"
    if action == "assign":
        return f"{detail['title']} → {detail['assign']['strategy']}; due {local(detail['due_at'])}"
    if action == "deferred":
        return f"{detail['reason']}; deferred to {local(detail['until'])}"
    if action == "outcome":
        late = "" if detail.get("on_time") in (None, True) else " (after the due time)"
        return f"{detail['outcome']} by {detail['actor']}{late}"
    if action == "end":
        return f"result: {detail['result']}"
    if action == "branch" and "segments" in detail:  # routed by segment: say what the store said
        said = ", ".join(
            f"{'in' if member else 'not in'} {name}" for name, member in detail["segments"].items()
        )
        why = f"; check failed: {detail['segments_error']}" if detail.get("segments_error") else ""
        return (
            f"case={detail['case']}, goto={detail['goto']}; {said or 'no answer'} "
            f"as of {local(detail['segments_as_of'])}{why}"
        )
    return ", ".join(f"{k}={v}" for k, v in detail.items() if v not in (None, "", [], {}))


def format_timeline(simulation: Simulation) -> str:
    zone_name = simulation.zones[0]
    plan = simulation.plan
    lines = [
        f"{plan.sop.id} v{plan.sop.version} ({plan.digest[:19]}) for contact "
        f"{simulation.contact.get('id')} in {', '.join(simulation.zones)}",
        "",
    ]
    for entry in simulation.timeline:
        when = entry.at.astimezone(clock.zone(zone_name)).strftime("%a %d %b %H:%M")
        lines.append(
            f"{when}  {entry.step:<16} {entry.action:<18} {_summary(entry.action, entry.detail, zone_name)}"
        )
    lines += [
        "",
        f"result: {simulation.result or 'not finished (waiting for input the script never gives)'}",
    ]
    return "\n".join(lines)


@sop_app.command("deploy")
@user_errors
def deploy_cmd(
    paths: Annotated[list[Path], typer.Argument(help="SOP files or folders of them")],
    segments: SEGMENTS_FOLDER = None,
) -> None:
    """Validate SOPs and store them as new versions, all or nothing: one invalid file, an
    `enroll` of an SOP neither deployed nor given, or a changed file whose `version` was not
    bumped, and nothing is deployed. A file whose content is unchanged is a no-op. An SOP whose
    entry has a `schedule` gets its Temporal Schedule from the running workers within 10 s."""
    store = _store()
    deployed_ids = {plan.sop.id for plan in store.latest_plans()}  # what `enroll` may name too
    plans, problems = validate_paths(paths, deployed_ids, segments)
    if not problems:
        try:
            deployed = _deploy_all(store, plans)
        except SopValidationError as exc:
            problems = exc.problems
    if problems:
        for problem in problems:
            typer.echo(str(problem), err=True)
        count = len(problems)
        typer.echo(f"{count} problem{'s' if count != 1 else ''} found: nothing deployed", err=True)
        raise typer.Exit(1)
    for plan, created in deployed:
        state = "deployed" if created else "unchanged"
        typer.echo(f"{state} {plan.sop.id} v{plan.sop.version} {plan.digest[:19]}")


def _deploy_all(store: Any, plans: dict[Path, Plan]) -> list[tuple[Plan, bool]]:
    """Store every plan in one transaction, or none: (plan, created) in order; a version taken
    by other content is reported at that file's `version:` line."""
    from sopflow.sop.loader import load_yaml_file
    from sopflow.store.repository import DeployConflicts

    paths = list(plans)
    try:
        done = store.deploy_all([plans[path] for path in paths])
    except DeployConflicts as exc:
        raise SopValidationError(
            [
                load_yaml_file(paths[index]).problem(("version",), str(error))
                for index, error in exc.conflicts
            ]
        ) from None
    return [(plans[path], deployment.created) for path, deployment in zip(paths, done, strict=True)]


@app.command("worker")
def worker_cmd(
    log_format: Annotated[str | None, LOG_FORMAT] = None,
    log_level: Annotated[str | None, LOG_LEVEL] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="serve Prometheus metrics (Temporal's and sopflow's) on this port "
            "(default: SOPFLOW_METRICS_PORT, else none)"
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            help="address of the metrics port (default: SOPFLOW_METRICS_HOST, else 127.0.0.1)"
        ),
    ] = None,
) -> None:
    """Run a worker until SIGTERM/SIGINT: SopRun workflows, scheduled cohorts' CohortRun
    fan-outs and their activities on SOPFLOW_TASK_QUEUE, against TEMPORAL_ADDRESS and
    SOPFLOW_DATABASE_URL (it runs the store's migrations on start, and keeps the cohorts'
    Temporal Schedules in step with the deployed SOPs). Run as many as you like. Exit 2 on bad
    configuration."""
    from sopflow.worker import main as worker_main

    worker_main(log_format, log_level, metrics_port, metrics_host)


@app.command("gateway")
@user_errors
def gateway_cmd(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    log_format: Annotated[str | None, LOG_FORMAT] = None,
    log_level: Annotated[str | None, LOG_LEVEL] = None,
) -> None:
    """Serve the REST API and webhooks (no Temporal server, no worker): for deployments of N
    gateways behind a load balancer. Needs SOPFLOW_API_TOKEN, SOPFLOW_PUBLIC_URL,
    SOPFLOW_DATABASE_URL and TEMPORAL_ADDRESS; /healthz is liveness, /readyz readiness,
    /metrics Prometheus (with --workers N: added up over the processes, in
    PROMETHEUS_MULTIPROC_DIR or a temporary directory)."""
    import os

    import uvicorn

    from sopflow.logs import LogSettings, configure_logging, logging_config
    from sopflow.metrics import multiprocess_dir

    logs = LogSettings.from_env(os.environ, log_format, log_level)
    with multiprocess_dir(workers):  # set before the processes start: they read it at import
        from sopflow.gateway.serve import app_from_env

        app_from_env()  # configuration checked here, in one line, before uvicorn starts processes
        configure_logging(logs)  # after: importing the app is chatty (alembic's plugins)
        uvicorn.run(
            "sopflow.gateway.serve:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=logging_config(logs),  # each --workers process applies it (spawned)
        )


@app.command("migrate")
@user_errors
def migrate_cmd() -> None:
    """Upgrade the store (SOPFLOW_DATABASE_URL) to the newest schema and print its revision.
    A deployment runs this once per release before starting the new gateways (workers also
    migrate on start; concurrent upgrades on PostgreSQL wait for each other)."""
    from sopflow.store.migrate import current_revision

    store = _store()  # migrates
    typer.echo(f"store at schema revision {current_revision(store.engine)}")


@app.command("up")
@user_errors
def up_cmd(
    sops: Annotated[Path, typer.Option(help="folder of SOPs to deploy on start")] = Path(
        "sop_definitions"
    ),
    port: Annotated[int, typer.Option(help="gateway (REST API) port")] = 8000,
    temporal_port: Annotated[int, typer.Option(help="Temporal dev server port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port")] = 8233,
    sandbox_port: Annotated[
        int, typer.Option(help="sandbox phone network port (used when TWILIO_ACCOUNT_SID is unset)")
    ] = 8300,
    smtp_port: Annotated[
        int, typer.Option(help="sandbox mail server port (used when SOPFLOW_SMTP_HOST is unset)")
    ] = 8025,
    teams: Annotated[
        Path | None, typer.Option(help="teams file to import on start (e.g. examples/teams.yaml)")
    ] = None,
    log_format: Annotated[str | None, LOG_FORMAT] = None,
    log_level: Annotated[str | None, LOG_LEVEL] = None,
) -> None:
    """Run the embedded stack in the foreground: Temporal dev server, worker, gateway, SQLite store,
    the sandbox phone network unless TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM are set,
    and the sandbox mail server unless SOPFLOW_SMTP_HOST and SOPFLOW_EMAIL_FROM are set.

    Data lives in SOPFLOW_DATA_DIR (default .sopflow); Ctrl-C stops everything cleanly.
    """
    import asyncio
    import os
    import signal

    from sopflow.logs import LogSettings, configure_logging
    from sopflow.runtime import hard_exit
    from sopflow.settings import Settings
    from sopflow.up import Ports, up

    configure_logging(LogSettings.from_env(os.environ, log_format, log_level))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ports = Ports(temporal_port, ui_port, port, sandbox_port, smtp_port)
        await up(Settings.from_env(), sops, ports, stop, teams)

    asyncio.run(serve())
    hard_exit(0)


def _store() -> Any:
    from sopflow.settings import Settings
    from sopflow.store.repository import Store, connect

    settings = Settings.from_env()
    if settings.database_url.startswith("sqlite"):  # the embedded default lives in the data dir
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(connect(settings.database_url))
    store.migrate()
    return store


@runs_app.command("list")
@user_errors
def runs_list_cmd(
    sop: Annotated[str | None, typer.Option(help="only this SOP")] = None,
    status: Annotated[str | None, typer.Option(help="running or finished")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Newest runs first, from the store (SOPFLOW_DATABASE_URL)."""
    from sopflow.store.views import run_summary

    rows = [run_summary(r) for r in _store().list_runs(sop, status, limit)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(
            f"{row['enrolled_at'][:19]}  {row['status']:<9} {row['result'] or '-':<14} "
            f"{row['sop']} v{row['version']}  {row['run_id']}"
        )
    if not rows:
        typer.echo("no runs")


@reps_app.command("import")
@user_errors
def reps_import_cmd(
    path: Annotated[Path, typer.Argument(help="a teams file (see examples/teams.yaml)")],
) -> None:
    """Add or update teams and reps from a YAML file; reps not listed are kept. All or nothing."""
    from sopflow.store.reps import RepDirectory
    from sopflow.teams import load_teams

    teams = load_teams(path)
    team_count, rep_count = RepDirectory(_store().engine).import_teams(teams)
    typer.echo(f"imported {team_count} teams, {rep_count} reps from {path}")


@reps_app.command("list")
@user_errors
def reps_list_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every rep with their team and phone (inactive reps get no new tasks)."""
    from dataclasses import asdict

    from sopflow.store.reps import RepDirectory

    reps = RepDirectory(_store().engine).reps()
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in reps], indent=2))
        return
    for rep in reps:
        typer.echo(f"{rep.id:<16} {rep.team_id or '-':<16} {rep.phone or '-':<16} {rep.name}")
    if not reps:
        typer.echo("no reps: import a teams file with `sopflow reps import FILE`")


@contacts_app.command("import")
@user_errors
def contacts_import_cmd(
    path: Annotated[Path, typer.Argument(help="a .csv (header row) or .jsonl file")],
    skip_invalid: Annotated[
        bool, typer.Option(help="import the good lines and report the bad ones")
    ] = False,
    api: Annotated[
        str, typer.Option(help="the gateway that tells referrers of their referrals' purchases")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Add or update contacts by id (idempotent); every bad line is reported as FILE:LINE:
    field: why, and by default nothing is imported if there is one.

    A purchase of a referred contact after their sign-up converts their referral; the gateway
    at --api is asked to tell the referrers' runs (if it cannot be reached, the conversions
    are kept and told at its next referral sign-up or order)."""
    from sopflow.contact_files import ContactImportError, count_lines, listing, read_file
    from sopflow.contacts_import import BarProgress, import_contacts

    records = read_file(path)
    store = _store()
    plans = store.latest_plans()  # the date fields they read are checked
    try:
        if sys.stdout.isatty():
            from rich.progress import Progress as RichProgress

            with RichProgress(transient=True) as rich_bar:
                bar = BarProgress(rich_bar)
                bar.start("check", count_lines(path))
                report = import_contacts(store.engine, records, str(path), plans, skip_invalid, bar)
        else:
            report = import_contacts(store.engine, records, str(path), plans, skip_invalid)
    except ContactImportError as exc:
        for line in listing(exc.problems):
            typer.echo(line, err=True)
        count = len(exc.problems)
        typer.echo(f"{count} problem{'s' if count != 1 else ''} found: nothing imported", err=True)
        raise typer.Exit(1) from None
    for line in listing(report.skipped):
        typer.echo(line, err=True)
    if count := len(report.skipped):
        typer.echo(
            f"{count} problem{'s' if count != 1 else ''}: those lines were skipped", err=True
        )
    typer.echo(report.summary(str(path)))
    if report.imported.purchases:
        _referral_conversions(store.engine, api)


def _referral_conversions(engine: Any, api: str) -> None:
    """Imported purchases convert referrals; the gateway tells the referrers' runs (this
    command cannot reach Temporal). An unreachable gateway is a warning: the import is done
    and the conversions are kept until a gateway tells them."""
    from sopflow.store.referrals import ReferralBook

    converted = ReferralBook(engine).convert_purchases()
    if not converted:
        return
    typer.echo(f"{converted} referral{'s' if converted != 1 else ''} converted")
    try:
        answer = json.loads(_api_post(api, "/api/v1/referrals/announce", {}))
    except SopflowError as exc:
        typer.echo(
            f"warning: the referrers' runs are not told yet ({exc}); the gateway tells them at "
            f"its next referral sign-up or order, or on POST {api}/api/v1/referrals/announce",
            err=True,
        )
        return
    typer.echo(f"referrers' runs told: {answer['told']}, still pending: {answer['pending']}")


@dnc_app.command("import")
@user_errors
def dnc_import_cmd(
    path: Annotated[Path, typer.Argument(help="a CSV whose first column is an E.164 number")],
    list_name: Annotated[
        str, typer.Option("--list", help="the list's name, e.g. national or internal")
    ] = "internal",
) -> None:
    """Add the numbers of a CSV file to a list (a header row is skipped). One invalid number
    and nothing is imported: the message names its line."""
    from sopflow.store.consent import ConsentBook

    added = ConsentBook(_store().engine).import_list(path, list_name)
    typer.echo(f"added {added} new numbers to the {list_name!r} list from {path}")


@dnc_app.command("check")
@user_errors
def dnc_check_cmd(phone: Annotated[str, typer.Argument(help="an E.164 number")]) -> None:
    """Say which list a number is on (exit code 1 when it is on one)."""
    from sopflow.phones import e164
    from sopflow.store.consent import ConsentBook

    if e164(phone) is None:
        raise SopflowError(f"invalid phone number {phone!r}: use E.164, e.g. +12125550123")
    found = ConsentBook(_store().engine).listed(phone)
    typer.echo(f"{phone} is on the {found!r} list" if found else f"{phone} is on no list")
    if found:
        raise typer.Exit(1)


@report_app.command("compliance")
@user_errors
def report_compliance_cmd(
    by: Annotated[
        str, typer.Option(help="rep, team, sop, version, variant or day (the item's due date, UTC)")
    ] = "rep",
    since: Annotated[
        str | None,
        typer.Option(help="runs enrolled since: an ISO date/date-time (UTC) or a span like 7d"),
    ] = None,
    sop: Annotated[str | None, typer.Option(help="only this SOP")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    as_csv: Annotated[bool, typer.Option("--csv")] = False,
) -> None:
    """Adherence scores recomputed from the event log: per group, the runs, the items on time,
    late, missed, excused and pending, violations, the first-task SLA, and the 0-100 score."""
    import csv

    from sopflow.compliance.adherence import GROUPINGS, REPORT_COLUMNS
    from sopflow.store.reports import Scores, parse_since

    if by not in GROUPINGS:
        raise SopflowError(f"--by {by!r}: use one of {', '.join(GROUPINGS)}")
    if as_json and as_csv:
        raise SopflowError("choose --json or --csv, not both")
    rows = Scores(_store().engine).report(
        by,  # type: ignore[arg-type]
        parse_since(since, datetime.now(UTC)),
        sop,
    )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=REPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    typer.echo(
        f"{by:<28} {'runs':>5} {'on time':>8} {'late':>5} {'missed':>6} {'excused':>7} "
        f"{'viol.':>5} {'SLA':>7} {'score':>6}"
    )
    for row in rows:
        sla = f"{row['sla_met']}/{row['sla_judged']}" if row["sla_judged"] else "-"
        score = "-" if row["score"] is None else f"{row['score']:.1f}"
        typer.echo(
            f"{row['group'][:28]:<28} {row['runs']:>5} {row['on_time']:>8} {row['late']:>5} "
            f"{row['missed']:>6} {row['excused']:>7} {row['violations']:>5} {sla:>7} {score:>6}"
        )
    if not rows:
        typer.echo("no runs to score")


@report_app.command("referrals")
@user_errors
def report_referrals_cmd(
    since: Annotated[
        str | None,
        typer.Option(help="cohorts enrolled since: an ISO date/date-time (UTC) or a span like 90d"),
    ] = None,
    period: Annotated[
        str, typer.Option(help="day, week or month (UTC) of the first enrolment in an asking SOP")
    ] = "month",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The referral funnel: reachable loyal customers × referral rate × forwarded-page visits
    × page conversion = referred customers who bought, per period.

    Loyal: contacts enrolled in an SOP whose texts carry {{ referral_link }}; asked: a text
    with it was sent to them; shared: their link was visited; visits: distinct visitors;
    converted: referred contacts who bought after signing up. Each contact counts in the
    period of their first enrolment; links no ask sent are shown apart, outside the funnel."""
    from rich.console import Console
    from rich.table import Table

    from sopflow.referrals import NOT_ASKED, PERIODS, funnel_view
    from sopflow.store.referrals import ReferralBook
    from sopflow.store.reports import parse_since

    if period not in PERIODS:
        raise SopflowError(f"--period {period!r}: use one of {', '.join(PERIODS)}")
    start = parse_since(since, datetime.now(UTC))
    view = funnel_view(ReferralBook(_store().engine).funnel(period, start), period, start)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    table = Table(title=f"Referral funnel by {period} of first enrolment", title_justify="left")
    for header in ("period", "loyal", "asked", "shared", "rate", "visits", "per sharer",
                   "signed up", "converted", "page conv."):  # fmt: skip
        table.add_column(header, justify="left" if header == "period" else "right", no_wrap=True)
    not_asked = view["not_asked"]
    extra = [not_asked] if not_asked["visits"] or not_asked["signed_up"] else []
    for row in [*view["rows"], None, view["total"], *extra]:
        if row is None:  # a line between the periods and the sums
            table.add_section()
            continue
        outside = row["period"] == NOT_ASKED  # no ask, so no loyal or asked to count
        per_sharer = row["visits_per_sharer"]
        table.add_row(
            row["period"],
            "-" if outside else str(row["loyal"]),
            "-" if outside else str(row["asked"]),
            str(row["shared"]),
            share(row["referral_rate"]),
            str(row["visits"]),
            "-" if per_sharer is None else f"{per_sharer:.2f}",
            str(row["signed_up"]),
            str(row["converted"]),
            share(row["page_conversion"]),
        )
    console = Console()
    # Piped or captured, rich assumes 80 columns: the table needs ~110.
    (console if console.is_terminal else Console(width=120)).print(table)
    if not view["rows"]:
        typer.echo("no contact was enrolled in an SOP that asks for referrals")


@report_app.command("run")
@user_errors
def report_run_cmd(run_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One run's score: each required step's status and every point lost, with its reason."""
    from sopflow.store.reports import Scores, run_score_view

    view = run_score_view(Scores(_store().engine).run(run_id))
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    score = "-" if view["score"] is None else f"{view['score']:.1f}"
    typer.echo(
        f"{view['run_id']}: {view['sop']} v{view['version']}, score {score}, SLA met: {view['sla_met']}"
    )
    for item in view["items"]:
        typer.echo(
            f"  {item['step']:<16} {item['kind']:<6} {item['status']:<8} {item['actor']:<12} {item['reason']}"
        )
    for violation in view["violations"]:
        typer.echo(
            f"  {violation['step']:<16} violation {violation['rule']}: {violation['reason']}"
        )


def _sandbox(method: str, url: str, path: str, expected: int, **options: Any) -> Any:
    """One request to the sandbox of `sopflow up`, as its account (the token `sopflow up` keeps
    in the data dir); a user error when it is not there or says no."""
    import httpx

    from sopflow.sandbox.auth import SANDBOX_TOKEN_FILE
    from sopflow.sandbox.server import SANDBOX_ACCOUNT
    from sopflow.settings import Settings

    token_file = Settings.from_env().data_dir / SANDBOX_TOKEN_FILE
    if not token_file.exists():  # read, never made here: only `sopflow up` makes the sandbox's
        raise ConfigurationError(
            f"no sandbox token in {token_file}: run `sopflow up` once with this data dir "
            "(SOPFLOW_DATA_DIR)"
        )
    auth = (SANDBOX_ACCOUNT, token_file.read_text().strip())
    try:
        answer = httpx.request(method, f"{url}{path}", timeout=30, auth=auth, **options)
    except httpx.HTTPError as exc:
        raise SopflowError(
            f"cannot reach the sandbox at {url} ({exc}): is `sopflow up` running?"
        ) from None
    if answer.status_code != expected:  # the phone sandbox answers errors in Twilio's shape
        try:
            said = answer.json()
        except ValueError:
            said = None
        why = (said.get("detail") or said.get("message")) if isinstance(said, dict) else None
        why = why or answer.text
        raise SopflowError(f"the sandbox said {answer.status_code}: {why}")
    return answer


@sandbox_app.command("inbox")
@user_errors
def sandbox_inbox_cmd(
    number: Annotated[str, typer.Argument(help="an E.164 number, e.g. +12125550123")],
    url: Annotated[str, SANDBOX_URL] = "http://127.0.0.1:8300",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every message to or from a number on the sandbox network, oldest first."""
    messages = _sandbox("GET", url, f"/sandbox/numbers/{number}/messages", 200).json()
    if as_json:
        typer.echo(json.dumps(messages, indent=2))
        return
    for message in messages:
        typer.echo(
            f"{message['date_created'][5:25]}  {message['from']:>16} → {message['to']:<22} {message['status']:<10} {message['body']}"
        )
    if not messages:
        typer.echo(f"no messages for {number}")


@sandbox_app.command("reply")
@user_errors
def sandbox_reply_cmd(
    number: Annotated[str, typer.Option("--from", help="the sandbox number replying")],
    text: Annotated[str, typer.Argument(help="what the person texts, e.g. STOP or 'call me at 5'")],
    to: Annotated[str, typer.Option(help="sopflow's sender number")] = "+15005550006",
    url: Annotated[str, SANDBOX_URL] = "http://127.0.0.1:8300",
) -> None:
    """Text sopflow from a sandbox number: the gateway gets a signed inbound webhook."""
    body = {"from": number, "to": to, "body": text}
    answer = _sandbox("POST", url, "/sandbox/inbound", 201, json=body)
    typer.echo(f"sent {text!r} from {number} ({answer.json()['sid']})")


@sandbox_app.command("mail")
@user_errors
def sandbox_mail_cmd(
    address: Annotated[str, typer.Argument(help="an email address, e.g. ann@example.com")],
    url: Annotated[str, SANDBOX_URL] = "http://127.0.0.1:8300",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every email the sandbox mail server took for an address, oldest first."""
    mails = _sandbox("GET", url, f"/sandbox/mailboxes/{address}/messages", 200).json()
    if as_json:
        typer.echo(json.dumps(mails, indent=2))
        return
    for mail in mails:
        typer.echo(f"#{mail['id']}  {mail['received_at'][:19]}  {mail['subject']}")
        typer.echo("    " + mail["text"].replace("\n", "\n    "))
    if not mails:
        typer.echo(f"no email for {address}")


@sandbox_app.command("unsubscribe")
@user_errors
def sandbox_unsubscribe_cmd(
    mail_id: Annotated[
        int, typer.Argument(help="the email's number (#) in `sopflow sandbox mail`")
    ],
    url: Annotated[str, SANDBOX_URL] = "http://127.0.0.1:8300",
) -> None:
    """Press an email's one-click unsubscribe button, as Gmail does (RFC 8058)."""
    answer = _sandbox("POST", url, f"/sandbox/mail/{mail_id}/unsubscribe", 200)
    typer.echo(f"unsubscribed: the gateway answered {answer.json()['unsubscribed']}")


@runs_app.command("show")
@user_errors
def runs_show_cmd(run_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One run and every step it took: planned, due and executed times, outcome, actor, reason."""
    from sopflow.store.views import run_view

    store = _store()
    run = store.run(run_id)
    if run is None:
        raise NotFoundError(f"unknown run {run_id!r}")
    view = run_view(run, store.step_events(run_id))
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    typer.echo(
        f"{view['run_id']}: {view['sop']} v{view['version']} for {view['contact']}, "
        f"{view['status']}{' (' + view['result'] + ')' if view['result'] else ''}"
    )
    for step in view["steps"]:
        extra = ", ".join(
            f"{k}={step[k]}"
            for k in ("planned_at", "due_at", "outcome", "actor", "reason")
            if step[k]
        )
        if step["action"] == "provider_status":  # what the carrier said, about which touch
            extra = f"status={step['detail'].get('status')} for {step['detail'].get('key')}"
        typer.echo(f"  {step['executed_at'][:19]}  {step['step']:<16} {step['action']:<16} {extra}")


@events_app.command("send")
@user_errors
def events_send_cmd(
    event_type: Annotated[str, typer.Argument(help="e.g. lead.created")],
    key: Annotated[str, typer.Option(help="idempotency key: the same key never enrols twice")],
    contact: Annotated[
        list[str], typer.Option(help="KEY=VALUE contact field, repeatable (id is required)")
    ],
    data: Annotated[list[str] | None, typer.Option(help="KEY=VALUE event data, repeatable")] = None,
    api: Annotated[str, typer.Option(help="the gateway's base URL")] = "http://127.0.0.1:8000",
) -> None:
    """POST an event to the gateway (token from SOPFLOW_API_TOKEN or the data dir)."""
    person: dict[str, Any] = dict(key_value(p, "--contact") for p in contact)
    if "tags" in person:
        person["tags"] = str(person["tags"]).split(",")
    body = {
        "type": event_type,
        "idempotency_key": key,
        "contact": person,
        "data": dict(key_value(p, "--data") for p in data or []),
    }
    typer.echo(_api_post(api, "/api/v1/events", body))


def _api_post(api: str, path: str, body: dict[str, Any]) -> str:
    """POST JSON to the gateway's API (token from SOPFLOW_API_TOKEN or the data dir); its
    answer's text, or one SopflowError saying what went wrong."""
    import urllib.error
    import urllib.request

    from sopflow.settings import Settings

    settings = Settings.from_env()
    token_file = settings.data_dir / "api_token"
    if settings.api_token is not None:
        token = settings.api_token.reveal()
    elif token_file.exists():
        token = token_file.read_text().strip()
    else:
        raise ConfigurationError("no API token: set SOPFLOW_API_TOKEN (or run `sopflow up` once)")
    request = urllib.request.Request(
        f"{api.rstrip('/')}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read().decode() or "{}").get("detail", exc.reason)
        raise SopflowError(f"{exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise SopflowError(
            f"cannot reach the gateway at {api} ({exc.reason}): is `sopflow up` running?"
        ) from None


@segments_app.command("validate")
@user_errors
def segments_validate_cmd(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="segment files or folders (default: segments/)")
    ] = None,
) -> None:
    """Check segment files: FILE:LINE:COL: error: MESSAGE per problem, exit 1 if any.

    Each valid file is listed as `ok FILE: ID`."""
    from sopflow.segmenting.files import SEGMENTS_DIR, validate_paths

    valid, problems = validate_paths(paths or [SEGMENTS_DIR])
    for problem in problems:
        typer.echo(str(problem), err=True)
    for path, segment in valid.items():
        typer.echo(f"ok {path}: {segment.id}")
    if problems:
        count = len(problems)
        typer.echo(f"{count} problem{'s' if count != 1 else ''} found", err=True)
        raise typer.Exit(1)


@segments_app.command("preview")
@user_errors
def segments_preview_cmd(
    segment_id: Annotated[str, typer.Argument(help="the segment's id, e.g. champions")],
    sample: Annotated[int, typer.Option(help="members to show (0-100)")] = 10,
    as_of: Annotated[
        str | None,
        typer.Option(help="evaluate at: an ISO date (from 00:00 UTC) or date-time; default now"),
    ] = None,
    folder: Annotated[Path, typer.Option("--segments", help="the segments folder")] = Path(
        "segments"
    ),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who is in a segment: member count, RFM spread, the first members.

    Reads SOPFLOW_DATABASE_URL's contacts: the member count, the spread over named RFM
    segments when the segment has an RFM rule, and the first members by id with their scores.
    --as-of evaluates it as it was then (later purchases and visits do not count)."""
    from rich.console import Console

    from sopflow.segmenting.files import find_segment
    from sopflow.segmenting.preview import parse_as_of, preview
    from sopflow.segmenting.table import preview_tables

    segment = find_segment(folder, segment_id)
    shown = preview(_store().engine, segment, parse_as_of(as_of, datetime.now(UTC)), sample)
    if as_json:
        typer.echo(json.dumps(shown.to_json(), indent=2, ensure_ascii=False))
        return
    Console(width=max(Console().width, 120)).print(preview_tables(shown))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
