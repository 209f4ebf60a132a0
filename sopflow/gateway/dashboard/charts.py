"""Charts drawn on the server as SVG (templates/dashboard/_bars.html): no script, nothing to
download, and a test can read every bar. Each bar segment links to the events behind it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 40, 24, 8  # room for the value axis, the day labels, the top tick
TICKS = 4


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    series: str
    value: int
    title: str  # the tooltip: "2026-11-03 sms: 41"
    href: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    segments: list[Segment]
    days: list[Label]
    ticks: list[Label]
    series: list[str]
    baseline: float

    @property
    def empty(self) -> bool:
        return not self.segments


def _nice_top(value: int) -> int:
    """A round axis top at or above `value` (1, 2, 5 × 10^n)."""
    if value <= TICKS:
        return TICKS
    magnitude = int(10 ** math.floor(math.log10(value)))
    return next(step * magnitude for step in (1, 2, 5, 10) if step * magnitude >= value)


def stacked_bars(
    days: Sequence[str],
    series: Sequence[str],
    values: Mapping[tuple[str, str], int],
    href: Callable[[str, str], str],
) -> BarChart:
    """One bar per day, stacked by series (channels), zero days drawn as gaps."""
    totals = [sum(values.get((d, s), 0) for s in series) for d in days]
    top = _nice_top(max(totals, default=0))
    plot_h = HEIGHT - BOTTOM - TOP
    baseline = float(HEIGHT - BOTTOM)
    slot = (WIDTH - LEFT) / max(len(days), 1)
    bar_w = max(2.0, slot * 0.7)
    segments, labels = [], []
    every = max(1, math.ceil(len(days) / 14))  # at most ~14 day labels
    for n, day in enumerate(days):
        x = LEFT + n * slot + (slot - bar_w) / 2
        y = baseline
        for name in series:
            value = values.get((day, name), 0)
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            title = f"{day} {name}: {value}"
            segments.append(Segment(round(x, 1), round(y, 1), round(bar_w, 1), round(h, 1),
                                    name, value, title, href(day, name)))  # fmt: skip
        if n % every == 0:
            labels.append(Label(round(x + bar_w / 2, 1), HEIGHT - 6, day[5:]))  # MM-DD
    ticks = [
        Label(LEFT - 4, round(baseline - plot_h * k / TICKS, 1), str(top * k // TICKS))
        for k in range(TICKS + 1)
    ]
    return BarChart(WIDTH, HEIGHT, segments, labels, ticks, list(series), baseline)
