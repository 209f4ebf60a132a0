"""Logging for every entry point (`sopflow up`, `sopflow worker`, `sopflow gateway`): text
(logfmt-ish, for a terminal) or JSON lines (for a log pipeline), one format for sopflow, uvicorn
and Temporal alike.

A JSON line has `time` (ISO 8601, UTC), `level`, `logger`, `msg`, then the record's context:
every `extra=` field a call passed (`run_id`, `contact_id`, `sop`, `step`…) and, inside an
activity or a workflow, Temporal's own details flattened (`run_id` is sopflow's run id, which is
the Temporal workflow id; `temporal_run_id` the execution; `activity`, `attempt`, `task_queue`).
An exception comes as its traceback text in `exception`. The text format shows the same context
as `key=value` pairs after the message.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, assert_never, get_args

from sopflow.errors import ConfigurationError

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
LEVELS = ("debug", "info", "warning", "error")
# What every LogRecord has; anything else on a record came through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_DROPPED = {"color_message"}  # uvicorn's ANSI-coloured copy of the message
# Temporal's logger adapters put their details under one key; these are the fields worth a column.
_ACTIVITY = {"workflow_id": "run_id", "workflow_run_id": "temporal_run_id",
             "activity_type": "activity", "attempt": "attempt", "task_queue": "task_queue"}  # fmt: skip
_WORKFLOW = {"workflow_id": "run_id", "run_id": "temporal_run_id", "task_queue": "task_queue"}
# Libraries whose INFO lines are routine, shown at debug only (their warnings still come through):
# APScheduler's "Running job …" / "… executed successfully" on every pass of the upkeep's jobs
# (each minute, each 10 s), alembic's "setup plugin …" lines in every process that imports it,
# the Twilio SDK's dozen lines per API request and aiosmtpd's per-session lines (the sandbox
# mail server), which /readyz's probes would otherwise bring every few seconds.
ROUTINE = ("apscheduler", "alembic.runtime.plugins", "twilio", "mail.log")


@dataclass(frozen=True)
class LogSettings:
    format: LogFormat = "text"
    level: str = "info"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], format: str | None = None, level: str | None = None
    ) -> LogSettings:
        """SOPFLOW_LOG_FORMAT and SOPFLOW_LOG_LEVEL, unless given (command-line options win)."""
        chosen = format or env.get("SOPFLOW_LOG_FORMAT") or "text"
        if chosen not in LOG_FORMATS:
            raise ConfigurationError(f"log format {chosen!r}: use {' or '.join(LOG_FORMATS)}")
        named = (level or env.get("SOPFLOW_LOG_LEVEL") or "info").lower()
        if named not in LEVELS:
            raise ConfigurationError(f"log level {named!r}: use one of {', '.join(LEVELS)}")
        return cls(chosen, named)  # `chosen in LOG_FORMATS` narrowed it to a LogFormat


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: Temporal's details flattened, then its `extra=`."""
    fields: dict[str, Any] = {}
    for key, names in (("temporal_workflow", _WORKFLOW), ("temporal_activity", _ACTIVITY)):
        details = record.__dict__.get(key)
        if isinstance(details, Mapping):
            fields.update({names[k]: v for k, v in details.items() if k in names})
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in _DROPPED and not key.startswith("temporal_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines inside values are escaped, so a line is a record)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(context(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time=… level=… logger=… msg=…` then the context as key=value, for a person reading."""

    def __init__(self) -> None:
        super().__init__("time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging names it so
        line = super().formatMessage(record)
        pairs = " ".join(f"{k}={_logfmt(v)}" for k, v in context(record).items())
        return f"{line} {pairs}" if pairs else line


def _logfmt(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


# Secrets that travel in URLs: an email's one-click unsubscribe token (a path segment), and any
# `?token=` a client still adds (the sandbox pages took one until they moved to sign-in; it opens
# nothing now, but a pasted token must not land in a log). Access logs keep the route only.
_SECRET_IN_PATH = re.compile(r"(/unsubscribe/)[^/?#\s]+|([?&]token=)[^&#\s]+")


def redact(path: str) -> str:
    """`path` with the secrets it may carry replaced by `…`."""
    return _SECRET_IN_PATH.sub(lambda m: f"{m.group(1) or m.group(2)}…", path)


class RedactAccessLog(logging.Filter):
    """uvicorn's access records carry (client, method, path, http version, status) as args."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def logging_config(settings: LogSettings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for `settings`: also what uvicorn applies in each of its
    `--workers` processes (they are spawned, so they inherit no logging set up here)."""
    routine = "DEBUG" if settings.level == "debug" else "WARNING"
    match settings.format:
        case "text":
            formatter = f"{__name__}.TextFormatter"
        case "json":
            formatter = f"{__name__}.JsonFormatter"
        case _:
            assert_never(settings.format)
    return {
        "version": 1,
        "disable_existing_loggers": False,  # loggers made at import time must keep logging
        "formatters": {"sopflow": {"()": formatter}},
        "filters": {"redact": {"()": f"{__name__}.RedactAccessLog"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "sopflow",
                "stream": "ext://sys.stderr",
            }
        },
        # uvicorn's loggers hand their records to ours (its own config would format them itself).
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
            "uvicorn.access": {"handlers": [], "propagate": True, "filters": ["redact"]},
            **{name: {"level": routine} for name in ROUTINE},
        },
        "root": {"handlers": ["stderr"], "level": settings.level.upper()},
    }


def configure_logging(settings: LogSettings) -> None:
    """Set up logging for this process (replacing what was there)."""
    from temporalio import activity, workflow

    logging.config.dictConfig(logging_config(settings))
    logging.captureWarnings(True)  # a library's warning is a log line too, not a bare stderr line
    # Our formatters show Temporal's details as fields: not also as a dict after each message.
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
