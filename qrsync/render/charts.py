"""Charts drawn as inline SVG, for pages that must fetch nothing (the HTML report, the daemon's
status page): the SVG primitives, a value axis, a time axis cut into days, weeks or months, and
stacked columns. What a chart shows is the page's business; how it is drawn is this module's.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal


def escape(value: object) -> str:
    """Escaped text for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


# --- the SVG layer -------------------------------------------------------------------------------

CHART_WIDTH = 560


def f(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def svg(chart_id: str, label: str, height: float, body: Sequence[str]) -> str:
    """An accessible chart: its title is what a screen reader says and a tooltip shows."""
    return (
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {CHART_WIDTH} {f(height)}" '
        f'role="img" aria-labelledby="{chart_id}-title">'
        f'<title id="{chart_id}-title">{escape(label)}</title>{"".join(body)}</svg>'
    )


def rect(x: float, y: float, w: float, h: float, fill: str, tip: str = "") -> str:
    title = f"<title>{escape(tip)}</title>" if tip else ""
    return (
        f'<rect x="{f(x)}" y="{f(y)}" width="{f(max(w, 0))}" height="{f(max(h, 0))}" '
        f'fill="{fill}">{title}</rect>'
    )


def text(x: float, y: float, text: str, anchor: str = "start", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{f(x)}" y="{f(y)}" text-anchor="{anchor}"{klass}>{escape(text)}</text>'


def hline(x1: float, x2: float, y: float, cls: str = "grid") -> str:
    return f'<line x1="{f(x1)}" x2="{f(x2)}" y1="{f(y)}" y2="{f(y)}" class="{cls}"/>'


def ticks(top: float) -> list[int]:
    """Round, whole-number axis ticks from 0 to at least ``top`` (about five of them)."""
    if top <= 0:
        return [0, 1]
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(1, int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)))
    return [i * step for i in range(math.ceil(top / step) + 1)]


@dataclass(frozen=True)
class Plot:
    """The drawing area inside a chart's margins, with a value axis from 0 to ``ticks[-1]``."""

    left: float
    top: float
    width: float
    height: float
    ticks: list[int]

    def y(self, value: float) -> float:
        return self.top + self.height * (1 - value / self.ticks[-1])

    def y_axis(self) -> list[str]:
        right = self.left + self.width
        parts = []
        for tick in self.ticks:
            parts.append(hline(self.left, right, self.y(tick)))
            parts.append(text(self.left - 6, self.y(tick) + 4, f"{tick:,}", "end"))
        return parts


def legend(items: Sequence[tuple[str, str, str]]) -> str:
    """An HTML legend under a chart: (colour, name, value) per item."""
    entries = "".join(
        f'<li><span class="swatch" style="background:{colour}"></span>{escape(name)} '
        f"<b>{escape(value)}</b></li>"
        for colour, name, value in items
    )
    return f'<ul class="legend">{entries}</ul>'


# --- time axis -----------------------------------------------------------------------------------


Unit = Literal["day", "week", "month"]


def bucket_start(unit: Unit, day: date) -> date:
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day


def next_bucket(unit: Unit, bucket: date) -> date:
    if unit == "month":
        return (bucket + timedelta(days=32)).replace(day=1)
    return bucket + timedelta(days=7 if unit == "week" else 1)


@dataclass(frozen=True)
class Timeline:
    """The report window cut into days, or weeks or months when it is long."""

    unit: Unit
    buckets: list[date]

    def key(self, day: date) -> date:
        return bucket_start(self.unit, day)

    def label(self, bucket: date) -> str:
        return bucket.strftime("%Y-%m") if self.unit == "month" else bucket.strftime("%m-%d")

    def tip(self, bucket: date) -> str:
        if self.unit == "week":
            return f"week of {bucket.isoformat()}"
        return self.label(bucket) if self.unit == "month" else bucket.isoformat()


def x_labels(timeline: Timeline, x_of: Callable[[int], float], baseline: float) -> list[str]:
    """At most about nine labels under a time axis, evenly spaced."""
    step = max(1, math.ceil(len(timeline.buckets) / 9))
    return [
        text(x_of(i), baseline, timeline.label(bucket), "middle")
        for i, bucket in enumerate(timeline.buckets)
        if i % step == 0
    ]


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    values: list[int]


def columns(chart_id: str, label: str, timeline: Timeline, series: Sequence[Series]) -> str:
    """Stacked columns, one per time bucket, each segment with a tooltip."""
    count = len(timeline.buckets)
    totals = [sum(s.values[i] for s in series) for i in range(count)]
    plot = Plot(left=44, top=10, width=CHART_WIDTH - 56, height=190, ticks=ticks(max(totals)))
    slot = plot.width / count
    bar = max(slot * 0.72, 1.0)
    body = plot.y_axis()
    for i, bucket in enumerate(timeline.buckets):
        x = plot.left + i * slot + (slot - bar) / 2
        base = 0
        for s in series:
            value = s.values[i]
            if value:
                top = plot.y(base + value)
                tip = f"{timeline.tip(bucket)}: {value:,} {s.name}"
                body.append(rect(x, top, bar, plot.y(base) - top, s.colour, tip))
                base += value
    body.append(hline(plot.left, plot.left + plot.width, plot.y(0), "axis"))
    body += x_labels(timeline, lambda i: plot.left + (i + 0.5) * slot, plot.y(0) + 16)
    return svg(chart_id, label, plot.top + plot.height + 24, body)


def per_unit(timeline: Timeline) -> str:
    return {"day": "per day", "week": "per week", "month": "per month"}[timeline.unit]
