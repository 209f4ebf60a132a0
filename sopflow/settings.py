"""Configuration, read from the environment once and passed into constructors.

Temporal's own variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS…) are read
by temporalio's env config, so a cluster or Temporal Cloud is a configuration change.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.errors import ConfigurationError


class Secret:
    """A value that never prints."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    task_queue: str
    api_token: Secret | None
    rules_file: Path | None = None  # the organisation's own contact rules (SOPFLOW_RULES)
    public_url: str | None = None  # where Twilio reaches the gateway (SOPFLOW_PUBLIC_URL)
    unsubscribe_key: Secret | None = None  # signs email unsubscribe links (SOPFLOW_UNSUBSCRIBE_KEY)
    db_connections: int = (
        20  # store connections, and threads that use them (SOPFLOW_DB_CONNECTIONS)
    )
    temporal_ui_url: str | None = None  # Temporal's web UI, linked from the dashboard's runs

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("SOPFLOW_DATA_DIR", ".sopflow"))
        return cls(
            data_dir=data_dir,
            database_url=env.get("SOPFLOW_DATABASE_URL", f"sqlite:///{data_dir / 'sopflow.db'}"),
            task_queue=env.get("SOPFLOW_TASK_QUEUE", "sopflow"),
            api_token=_env_secret(env, "SOPFLOW_API_TOKEN"),
            rules_file=Path(env["SOPFLOW_RULES"]) if env.get("SOPFLOW_RULES") else None,
            public_url=env.get("SOPFLOW_PUBLIC_URL") or None,
            unsubscribe_key=_env_secret(env, "SOPFLOW_UNSUBSCRIBE_KEY"),
            db_connections=_env_count(env, "SOPFLOW_DB_CONNECTIONS", 20),
            temporal_ui_url=env.get("SOPFLOW_TEMPORAL_UI_URL") or None,
        )

    def kept_secret(self, name: str) -> Secret:
        """A secret generated once and kept in the data dir (readable by its owner only)."""
        path = self.data_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        value = path.read_text().strip()
        if not value:  # an empty API token would let every request in
            raise ConfigurationError(
                f"{path} is empty: write a secret in it, or delete it to have one generated"
            )
        return Secret(value)

    def unsubscribe_links(self, public_url: str) -> UnsubscribeLinks:
        """Email unsubscribe links to the gateway at `public_url`. Every worker and gateway of one
        deployment must share the key: set SOPFLOW_UNSUBSCRIBE_KEY (else one kept in the data
        dir, enough when they share it, as under `sopflow up`)."""
        key = self.unsubscribe_key or self.kept_secret("unsubscribe_key")
        return UnsubscribeLinks(public_url, key.reveal().encode())


def _env_secret(env: Mapping[str, str], name: str) -> Secret | None:
    """The secret in variable `name`, None when unset. Set but blank is refused: it is a mistake,
    and an empty API token would let every request in."""
    value = env.get(name)
    if value is None:
        return None
    if not value.strip():
        raise ConfigurationError(f"{name} is set but empty: give it a secret, or unset it")
    return Secret(value)


def temporal_connect_config() -> dict[str, Any]:
    """Client.connect arguments from Temporal's env config (and config file, if any)."""
    from temporalio.envconfig import ClientConfigProfile

    config = dict(ClientConfigProfile.load().to_client_connect_config())
    config.setdefault("target_host", "localhost:7233")
    return config


def _env_count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise ConfigurationError(f"{name}={raw!r}: a whole number from 1 to 500")
    return int(raw)
