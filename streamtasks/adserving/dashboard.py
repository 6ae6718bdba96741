"""The product's dashboard panel, "Models": per model, the hourly request rate, p50/p95/p99
latency, mean confidence and anomaly rate over a chosen window, from the same code as
``get_model_performance_stats`` (:func:`.stats.model_stats`); and PostgreSQL's health on the
overview. Registered under the ``streamtasks.dashboard_panels`` entry point, so the
dashboard core never imports the product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..observe.dashboard import Chart, Figures, Panel, PanelContext, Param, Table
from ..observe.dashboard.queries import MAX_FILTER_CHARS, BadInput, only_params
from . import db, modelstats, stats
from .config import DatabaseConfig
from .handlers import serves_builtins

#: The windows offered, in hours.
WINDOWS = ("1", "6", "24", "72", "168")
DEFAULT_WINDOW = "24"
#: Models offered in the form: those with results in the window, at most this many.
MAX_MODELS = 200
_MODELS = """
SELECT DISTINCT model_name FROM inference_results
WHERE created_at >= now() - make_interval(hours => $1) ORDER BY 1 LIMIT $2
"""


class ModelsPanel:
    """The "Models" panel; its asyncpg pool is made on first use (no I/O at import)."""

    def __init__(self, dsn: Callable[[], str] | None = None) -> None:
        self._dsn = dsn or (lambda: DatabaseConfig.from_env().dsn)
        self._pool: Any = None

    async def pool(self) -> Any:
        if self._pool is None:
            self._pool = await db.create_pool(self._dsn(), min_size=1, max_size=2)
        return self._pool

    async def models(self, hours: int) -> list[str]:
        async with db.connection(await self.pool()) as conn:
            rows = await conn.fetch(_MODELS, hours, MAX_MODELS)
        return [r["model_name"] for r in rows]

    async def params(self, ctx: PanelContext) -> Sequence[Param]:
        try:
            models = await self.models(int(WINDOWS[-1]))
        except Exception:  # the form still draws with the database down; data() says why
            models = []
        return [
            Param("model", "model", models[0] if models else "", tuple(models)),
            Param("hours", "window (hours)", DEFAULT_WINDOW, WINDOWS),
        ]

    async def data(self, ctx: PanelContext, query: Mapping[str, str]) -> dict[str, Any]:
        only_params(query, ("model", "hours"))
        hours = query.get("hours") or DEFAULT_WINDOW
        if hours not in WINDOWS:
            raise BadInput(f"hours must be one of {', '.join(WINDOWS)}")
        model = query.get("model") or ""
        if len(model) > MAX_FILTER_CHARS:
            raise BadInput(f"model must be at most {MAX_FILTER_CHARS} characters")
        if not model:
            found = await self.models(int(WINDOWS[-1]))
            if not found:
                return {"model_name": None, "hours": int(hours), "requests": 0, "buckets": []}
            model = found[0]
        pool = await self.pool()
        if ctx.registry is not None:
            result = await stats.model_stats(pool, ctx.redis, ctx.registry, model, float(hours))
        else:
            result = await modelstats.model_performance_stats(pool, model, float(hours))
        return result

    async def health(self, ctx: PanelContext) -> tuple[str, dict[str, Any]]:
        try:
            pool = await self.pool()
        except Exception as exc:
            from ..logs import redact

            return "postgresql", {"health": "unhealthy", "error": redact(f"{type(exc).__name__}: {exc}")}
        return "postgresql", await db.database_health(pool)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def panel(self) -> Panel:
        return Panel(
            "models", "Models", self.data, view, self.params, self.health, self.close, applies=serves_builtins
        )


def _num(value: Any, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def view(data: dict[str, Any]) -> list[Chart | Table | Figures]:
    """Figures for the window, and one chart per measure over its hours."""
    if not data.get("model_name"):
        return [Figures([("models", "no inference results yet")])]
    figures = Figures(
        [
            ("requests", _num(data["requests"], "{:,}")),
            ("throughput (req/s)", _num(data.get("throughput_rps"), "{:.3g}")),
            ("p50 / p95 / p99 (ms)", " / ".join(_num(data.get(k)) for k in ("p50_ms", "p95_ms", "p99_ms"))),
            ("mean confidence", _num(data.get("mean_confidence"), "{:.3f}")),
            ("anomaly rate", _num(_percent(data.get("anomaly_rate")), "{:.2f} %")),
            ("training rows", _num(data.get("training_rows"), "{:,}")),
            ("dead letters", _num(data.get("dead_letters"), "{:,}")),
        ]
    )
    buckets = data["buckets"]
    x = [_epoch(b["bucket"]) for b in buckets]

    def col(key: str, scale: float = 1.0) -> list[float | None]:
        return [None if b.get(key) is None else b[key] * scale for b in buckets]

    return [
        figures,
        Chart("Requests per hour", "req/h", x, {"requests": col("requests")}),
        Chart("Latency", "ms", x, {"p50": col("p50_ms"), "p95": col("p95_ms"), "p99": col("p99_ms")}),
        Chart("Mean confidence", "", x, {"confidence": col("mean_confidence")}),
        Chart("Anomaly rate", "%", x, {"anomalies": col("anomaly_rate", 100.0)}),
    ]


#: The panel the entry point names (its pool is made on first use, from DATABASE_URL / DATABASE_*).
models_panel = ModelsPanel().panel()
