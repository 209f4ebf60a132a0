"""`sopflow segments preview` on a terminal: Rich tables of a Preview."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sopflow.segmenting.preview import Preview


def preview_tables(shown: Preview) -> Group:
    """The member count, the spread over named RFM segments (if any), and the sample."""
    segment = shown.segment
    parts: list[Table | Text] = [
        Text.assemble(
            (f"{segment.id}", "bold"),
            f" ({segment.name}) at {shown.as_of.isoformat()}: ",
            (f"{shown.members:,}", "bold"),
            f" member{'s' if shown.members != 1 else ''}",
        )
    ]
    if shown.rfm_counts is not None and segment.rules.rfm is not None:
        spread = Table(
            title=f"RFM segments ({segment.rules.rfm.currency} purchases)", title_justify="left"
        )
        spread.add_column("segment")
        spread.add_column("members", justify="right")
        spread.add_column("share", justify="right")
        for named, count in shown.rfm_counts.items():
            share = f"{100 * count / shown.members:.1f} %" if shown.members else "-"
            spread.add_row(named, f"{count:,}", share)
        parts.append(spread)
    sample = Table(title=f"first {len(shown.sample)} by id", title_justify="left")
    for column in ("id", "name", "stage", "tags"):
        sample.add_column(column)
    if segment.rules.rfm is not None:
        for column in ("R", "F", "M"):
            sample.add_column(column, justify="right")
        for column in ("RFM segment", "purchases", "total", "last purchase"):
            sample.add_column(column, justify="right" if column != "RFM segment" else "left")
    for member in shown.sample:
        name = " ".join(part for part in (member.first_name, member.last_name) if part)
        row = [member.id, name, member.lifecycle_stage or "", ", ".join(member.tags)]
        if member.rfm is not None:
            scores = member.rfm
            row += [
                str(scores.recency),
                str(scores.frequency),
                str(scores.monetary),
                scores.segment,
                str(scores.purchases),
                f"{scores.total:,.2f}",
                scores.last_purchase_at.strftime("%Y-%m-%d %H:%M"),
            ]
        sample.add_row(*row)
    parts.append(sample)
    return Group(*parts)
