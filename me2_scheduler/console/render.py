"""Server-rendered pages: Jinja2 templates shipped in the package, HTML-escaped always.

The filters format what pages show: times in the service ``Timezone``
(``when``, ``at_epoch``), big numbers with thin separators (``num``), capped
counts (``count``), ratios (``pct``) and durations (``ms``).
"""

from __future__ import annotations

from datetime import datetime

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from me2_scheduler.clock import from_epoch
from me2_scheduler.console.queries import Count
from me2_scheduler.timefmt import Display


def num(value: int | float | None) -> str:
    """``1234567`` → ``1 234 567`` (thin spaces); None → ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}".replace(",", "\u2009")
    return f"{int(value):,}".replace(",", "\u2009")


def count(value: Count) -> str:
    """A capped count: ``100 000+`` when there are more."""
    return num(value.value) + ("+" if value.capped else "")


def pct(ratio: float | None) -> str:
    """``0.987`` → ``98.7 %``; None → ``-``."""
    return "-" if ratio is None else f"{ratio * 100:.1f}\u2009%"


def ms(value: int | float | None) -> str:
    """Milliseconds for people: ``850 ms``, ``12.3 s``; None → ``-``."""
    if value is None:
        return "-"
    return f"{value:.0f}\u2009ms" if value < 10_000 else f"{value / 1000:.1f}\u2009s"


class Templates:
    """The console's templates, with its filters and the service's display zone."""

    def __init__(self, display: Display) -> None:
        self.display = display
        self.env = Environment(
            loader=PackageLoader("me2_scheduler.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            num=num, count=count, pct=pct, ms=ms, when=self.when, at_epoch=self.at_epoch
        )
        self.env.globals.update(zone=str(display.zone), prefix="/console")

    def when(self, moment: datetime | None) -> str:
        """A stored time in the service zone, ``-`` for none."""
        return self.display.format(moment) or "-"

    def at_epoch(self, seconds: float | None, pattern: str = "") -> str:
        """Epoch seconds in the service zone (``pattern``: a strftime format), ``-`` for None."""
        if seconds is None:
            return "-"
        moment = from_epoch(seconds)
        if pattern:
            return moment.astimezone(self.display.zone).strftime(pattern)
        return self.display.format(moment)

    def render(self, name: str, **context: object) -> str:
        """The page ``name`` rendered with ``context``."""
        return self.env.get_template(name).render(**context)
