"""Links from a run page to Temporal's own UI: the workflow's event history, read there."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

UI_PORT = 8233  # the dev server's UI (`temporal server start-dev`, `sopflow up --ui-port`)


@dataclass(frozen=True)
class TemporalUi:
    base: str  # e.g. http://127.0.0.1:8233 (SOPFLOW_TEMPORAL_UI_URL)
    namespace: str = "default"

    @classmethod
    def for_server(
        cls,
        setting: str | None,
        target_host: str,
        namespace: str = "default",
        ui_port: int = UI_PORT,
    ) -> TemporalUi:
        """The configured UI address (SOPFLOW_TEMPORAL_UI_URL), else the Temporal server's host
        on the dev server's UI port (a cluster's UI lives elsewhere: set the setting)."""
        if setting:
            return cls(setting.rstrip("/"), namespace)
        host = urlsplit(f"//{target_host}").hostname or "localhost"
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        return cls(f"http://{host}:{ui_port}", namespace)

    def history(self, workflow_id: str, run_id: str) -> str:
        """The history of one run of the workflow (its first: `runs.first_run_id`)."""
        parts = (self.namespace, workflow_id, run_id)
        ns, wf, run = (quote(p, safe="") for p in parts)
        return f"{self.base}/namespaces/{ns}/workflows/{wf}/{run}/history"

    def runs(self, workflow_id: str) -> str:
        """Every run of the workflow id (a continued-as-new run has a new run id)."""
        query = urlencode({"query": f'WorkflowId="{workflow_id}"'})
        return f"{self.base}/namespaces/{quote(self.namespace, safe='')}/workflows?{query}"
