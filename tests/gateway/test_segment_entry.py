"""Entry conditions naming a segment are answered at intake by the store, after the event's
contact is stored (so its tags count): a contact outside the segment is not enrolled, and the
answer says why in `skipped`, as it does for an opted-out contact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOT = "id: hot_leads\nname: Hot leads\ndescription: tagged hot\nrules:\n  tags: {any: [hot]}\n"


def sop(condition: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "hot_callback",
        "version": 1,
        "name": "Hot callback",
        "owner": "qa",
        "entry": {"events": ["lead.created"], "conditions": [condition]},
        "steps": [
            {"id": "pause", "kind": "wait", "duration": "1d"},
            {"id": "done", "kind": "end", "result": "done"},
        ],
    }


def segments(tmp_path: Path) -> Path:
    folder = tmp_path / "segments"
    folder.mkdir()
    (folder / "hot_leads.yaml").write_text(HOT)
    return folder


async def post(http: httpx.AsyncClient, key: str, tags: list[str]) -> dict[str, Any]:
    contact = {"id": "lead-1", "phone": "+12125550123", "tags": tags}
    body = {"type": "lead.created", "contact": contact, "idempotency_key": key}
    answer = await http.post("/api/v1/events", json=body, headers=AUTH)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


async def test_a_contact_outside_the_segment_is_not_enrolled_and_told_why(
    gateway: Any, tmp_path: Path
) -> None:
    folder = segments(tmp_path)
    async with gateway(sop({"segment": "hot_leads"}), TOKEN, segments=folder) as (http, store):
        cold = await post(http, "evt-1", [])
        assert cold["enrolled"] == []
        (skipped,) = cold["skipped"]
        assert skipped["sop"] == "hot_callback"
        assert skipped["reason"].startswith(
            "entry condition: the contact is not in segment 'hot_leads' (as of "
        )
        assert store.running_runs("lead-1") == []
        # The same lead, tagged hot by this event: stored first, then asked, so it is a member.
        hot = await post(http, "evt-2", ["hot"])
        assert [run["sop"] for run in hot["enrolled"]] == ["hot_callback"]
        assert hot["skipped"] == []


async def test_not_segment_keeps_members_out(gateway: Any, tmp_path: Path) -> None:
    folder = segments(tmp_path)
    async with gateway(sop({"not_segment": "hot_leads"}), TOKEN, segments=folder) as (http, _):
        hot = await post(http, "evt-1", ["hot"])
        assert hot["enrolled"] == []
        assert hot["skipped"][0]["reason"].startswith(
            "entry condition: the contact is in segment 'hot_leads' (as of "
        )
        # The CRM untags the lead: the event stores its tags, so it is no longer a member.
        cold = await post(http, "evt-2", [])
        assert [run["sop"] for run in cold["enrolled"]] == ["hot_callback"]


async def test_a_segment_gone_since_deployment_keeps_the_sop_out_with_the_reason(
    gateway: Any, tmp_path: Path
) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    async with gateway(sop({"segment": "hot_leads"}), TOKEN, segments=empty) as (http, _):
        answer = await post(http, "evt-1", ["hot"])
        assert answer["enrolled"] == []
        assert answer["skipped"] == [
            {
                "sop": "hot_callback",
                "reason": f"entry condition: unknown segment 'hot_leads' in {empty} "
                "(it has no valid segment files)",
            }
        ]
