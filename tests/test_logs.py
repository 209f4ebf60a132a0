"""Logging (sopflow/logs.py): the JSON and text lines, Temporal's details flattened, the options
and variables of every entry point, and the upkeep's routine chatter kept to debug."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sopflow.errors import ConfigurationError
from sopflow.logs import ROUTINE, JsonFormatter, LogSettings, TextFormatter, configure_logging

ROOT = Path(__file__).resolve().parents[1]


def record(msg: str = "touch %s sent", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("sopflow.test", logging.INFO, __file__, 1, msg, args or ("k1",), None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_parses_with_its_fields_and_extras() -> None:
    line = JsonFormatter().format(record(contact_id="c-1", sop="hello"))
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "sopflow.test"
    assert entry["msg"] == "touch k1 sent"
    assert entry["time"].endswith("+00:00")  # ISO 8601, UTC
    assert entry["contact_id"] == "c-1" and entry["sop"] == "hello"
    assert "args" not in entry and "levelno" not in entry  # LogRecord's own attributes stay out


def test_an_activity_record_has_temporal_details_flattened() -> None:
    details = {
        "activity_id": "1", "activity_type": "sopflow.perform", "attempt": 2,
        "namespace": "default", "task_queue": "sopflow", "workflow_id": "sop:hello:c-1:k",
        "workflow_run_id": "0197-run", "workflow_type": "SopRun",
    }  # fmt: skip
    entry = json.loads(JsonFormatter().format(record(temporal_activity=details, contact_id="c-1")))
    assert entry["run_id"] == "sop:hello:c-1:k"  # sopflow's run id is the workflow id
    assert entry["temporal_run_id"] == "0197-run"
    assert entry["activity"] == "sopflow.perform" and entry["attempt"] == 2
    assert entry["task_queue"] == "sopflow" and entry["contact_id"] == "c-1"
    assert "temporal_activity" not in entry and "namespace" not in entry


def test_a_workflow_record_names_its_run() -> None:
    details = {"workflow_id": "sop:hello:c-1:k", "run_id": "0197-run", "task_queue": "q"}
    entry = json.loads(JsonFormatter().format(record(temporal_workflow=details)))
    assert (entry["run_id"], entry["temporal_run_id"]) == ("sop:hello:c-1:k", "0197-run")


def test_an_exception_is_one_json_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_the_text_line_has_the_context_as_key_value_pairs() -> None:
    line = TextFormatter().format(record(contact_id="c 1", sop="hello"))
    assert "level=INFO logger=sopflow.test msg=touch k1 sent" in line
    assert line.endswith('contact_id="c 1" sop=hello')  # quoted when it has a space


def test_settings_come_from_options_then_the_environment() -> None:
    assert LogSettings.from_env({}) == LogSettings("text", "info")
    env = {"SOPFLOW_LOG_FORMAT": "json", "SOPFLOW_LOG_LEVEL": "DEBUG"}
    assert LogSettings.from_env(env) == LogSettings("json", "debug")
    assert LogSettings.from_env(env, "text", "warning") == LogSettings("text", "warning")


def test_bad_values_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match=r"^log format 'xml': use text or json$"):
        LogSettings.from_env({"SOPFLOW_LOG_FORMAT": "xml"})
    with pytest.raises(
        ConfigurationError, match=r"^log level 'loud': use one of debug, info, warning, error$"
    ):
        LogSettings.from_env({}, level="loud")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes the process's logging: put it back for the next tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ROUTINE:
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.captureWarnings(False)


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_routine_library_lines_show_at_debug_only(
    capsys: pytest.CaptureFixture[str], level: str, shown: bool
) -> None:
    configure_logging(LogSettings("json", level))
    logging.getLogger("apscheduler.executors.default").info('Running job "reconcile_outbox"')
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.types")
    logging.getLogger("twilio.async_http_client").info("-- BEGIN Twilio API Request --")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
    logging.getLogger("sopflow.upkeep").info("deployed hello v2")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["msg"] for e in lines if e["level"] == "WARNING"] == ["Run time of job was missed"]
    assert any(e["msg"] == "deployed hello v2" for e in lines)  # sopflow's own news stays
    assert any("Running job" in e["msg"] for e in lines) is shown
    assert any("setup plugin" in e["msg"] for e in lines) is shown
    assert any("Twilio API Request" in e["msg"] for e in lines) is shown


@pytest.mark.usefixtures("restored_logging")
def test_access_lines_keep_the_route_not_the_secrets_in_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LogSettings("text", "info"))
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)  # uvicorn servers of earlier tests set their own level on it
    line = '%s - "%s %s HTTP/%s" %d'
    access.info(line, "127.0.0.1:5", "POST", "/unsubscribe/s3cr3t.t0ken?x=1", "1.1", 200)
    access.info(line, "127.0.0.1:5", "GET", "/sandbox/+12125550123?token=abc&n=2", "1.1", 200)
    access.info(line, "127.0.0.1:5", "GET", "/api/v1/runs/r-1", "1.1", 200)
    err = capsys.readouterr().err
    assert "s3cr3t" not in err and "abc" not in err
    assert "/unsubscribe/…?x=1" in err and "?token=…&n=2" in err and "/api/v1/runs/r-1" in err


def sopflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from sopflow.cli import main; main()", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=os.environ | env,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["worker", "gateway", "up"])
def test_every_entry_point_refuses_a_bad_log_option_in_one_line(command: str) -> None:
    bad = sopflow(command, "--log-format", "xml")
    assert bad.returncode == ConfigurationError.exit_code, bad.stderr
    assert bad.stderr == "error: log format 'xml': use text or json\n"
    from_env = sopflow(command, SOPFLOW_LOG_LEVEL="loud")
    assert from_env.returncode == ConfigurationError.exit_code, from_env.stderr
    assert from_env.stderr == "error: log level 'loud': use one of debug, info, warning, error\n"
