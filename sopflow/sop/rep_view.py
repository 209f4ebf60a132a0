"""What `{{ rep.* }}` is in a template: one definition for the validator, the store's reps, the
placeholder before anyone is assigned, and the simulator's sample rep. Every field is always
present (empty when unknown), so a template that validates renders whoever holds the task."""

from __future__ import annotations

REP_FIELDS = frozenset({"id", "name", "first_name", "phone", "email", "team"})


def rep_view(
    rep_id: str,
    name: str,
    phone: str | None = None,
    email: str | None = None,
    team: str | None = None,
    first_name: str | None = None,
) -> dict[str, str]:
    view = {
        "id": rep_id,
        "name": name or rep_id,
        "first_name": first_name or (name.split()[0] if name.strip() else rep_id),
        "phone": phone or "",
        "email": email or "",
        "team": team or "",
    }
    assert view.keys() == REP_FIELDS
    return view


# Before a rep holds the task (a message sent for the team), texts speak for the team.
UNASSIGNED_REP = rep_view("unassigned", "the team", first_name="the team")
# The simulator's rep: previews show a plausible name where production shows the real one.
SAMPLE_REP = rep_view("rep-1", "Sam Rivera", "+12125550199", "sam@example.com", "inside_sales")
