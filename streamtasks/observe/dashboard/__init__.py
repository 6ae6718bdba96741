"""The web dashboard: ``streamtasks dashboard APP`` and a worker's ``--dashboard-port``.

=================  ==========================================================================
:mod:`.config`     targets (which streams) and access (token / basic auth, CSRF, read-only)
:mod:`.sampler`    the live overview: ``gather_status`` sampled, rates, workers seen and dead
:mod:`.queries`    stream details and dead letters: inputs validated, actions from deadletter
:mod:`.api`        the JSON endpoints and the server-sent event stream
:mod:`.pages`      the HTML pages (Jinja2 templates, server-side SVG charts from :mod:`.svg`)
:mod:`.panels`     pages other packages add (the adserving product's "models")
:mod:`.board`      what every handler shares (:class:`Dashboard`)
:mod:`.server`     the aiohttp application and :class:`DashboardServer`
=================  ==========================================================================
"""

from __future__ import annotations

from .board import Dashboard
from .config import DEFAULT_HOST, DEFAULT_PORT, Access, Targets
from .panels import Chart, Figures, Panel, PanelContext, Param, Table, installed_panels
from .server import DashboardServer, create_app

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Access",
    "Chart",
    "Dashboard",
    "DashboardServer",
    "Figures",
    "Panel",
    "PanelContext",
    "Param",
    "Table",
    "Targets",
    "create_app",
    "installed_panels",
]
