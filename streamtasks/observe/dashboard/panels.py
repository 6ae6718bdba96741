"""Pages other packages add to the dashboard (the adserving product adds "models").

A package declares a :class:`Panel` under the ``streamtasks.dashboard_panels`` entry-point
group. The dashboard draws the panel's parameter form, calls :attr:`Panel.data` with the
query (a :class:`~.queries.BadInput` from it is a 4xx) and draws what :attr:`Panel.view`
makes of the data: :class:`Chart` (server-side SVG), :class:`Table`, :class:`Figures`. The
same data is served as JSON at ``/api/panels/<name>``. A panel's :attr:`Panel.health` adds a
service to the overview (PostgreSQL, for the product).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from attrs import field, frozen
from redis.asyncio import Redis

from ...errors import MissingExtra
from ...registry import Registry
from .config import Targets

log = logging.getLogger("streamtasks.dashboard")

#: Entry-point group of dashboard panels.
PANELS_GROUP = "streamtasks.dashboard_panels"


@frozen
class PanelContext:
    """What a panel may use: the Redis client, the targets and the app's registry."""

    redis: Redis
    targets: Targets
    registry: Registry | None


@frozen
class Param:
    """A query parameter of a panel, drawn as a select (``choices``) or a text field."""

    name: str
    label: str
    default: str = ""
    choices: Sequence[str] = ()


@frozen
class Chart:
    """A line chart: x is seconds since the epoch; ``series`` maps a label to y values."""

    title: str
    unit: str
    x: Sequence[float]
    series: Mapping[str, Sequence[float | None]]


@frozen
class Table:
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


@frozen
class Figures:
    """A row of labelled numbers."""

    items: Sequence[tuple[str, str]]


Section = Chart | Table | Figures


@frozen
class Panel:
    name: str  # the URL segment: /panels/<name>
    title: str
    data: Callable[[PanelContext, Mapping[str, str]], Awaitable[dict[str, Any]]]
    view: Callable[[dict[str, Any]], Sequence[Section]]
    params: Callable[[PanelContext], Awaitable[Sequence[Param]]]
    health: Callable[[PanelContext], Awaitable[tuple[str, dict[str, Any]]]] | None = None
    close: Callable[[], Awaitable[None]] | None = field(default=None)
    #: Whether the panel (and its health) belongs on the dashboard of the app with this
    #: registry: the package decides (the product's panel only where its handlers are served).
    applies: Callable[[Registry], bool] | None = None


def installed_panels(registry: Registry) -> list[Panel]:
    """The panels declared under :data:`PANELS_GROUP` by installed packages that apply to the
    app of ``registry``; a package whose extra is not installed has none."""
    from importlib.metadata import entry_points

    found = []
    for entry in entry_points(group=PANELS_GROUP):
        try:
            panel = entry.load()
        except MissingExtra as exc:  # an optional part that is not installed: not a fault
            log.debug("dashboard panel %s: %s", entry.name, exc)
            continue
        except Exception:  # a broken plugin costs its panel, not the dashboard
            log.exception("cannot load dashboard panel %s", entry.name)
            continue
        if isinstance(panel, Panel) and (panel.applies is None or panel.applies(registry)):
            found.append(panel)
    return found
