"""The adserving product on streamtasks: ML training data and inference results into PostgreSQL.

==================  ===============================================================
:mod:`.records`     pure parsing and validation of entries into records
:mod:`.store`       idempotent COPY of records into the tables (asyncpg)
:mod:`.handlers`    the built-in registry (also :mod:`streamtasks.builtins`)
:mod:`.db`          schema access, pools, health and model statistics
:mod:`.config`      the product's settings from the environment and ``.env``
:mod:`.system`      :class:`AsyncProcessingSystem`, the facade an ad-serving API uses
:mod:`.cli`         ``streamtasks db`` and ``streamtasks stats``
==================  ===============================================================

Installed with the ``adserving`` extra (``pip install 'streamtasks[adserving]'``: asyncpg,
python-dotenv); without it, importing this package raises :class:`~streamtasks.errors.MissingExtra`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingExtra

try:
    import asyncpg  # noqa: F401
    import dotenv  # noqa: F401
except ImportError as exc:
    raise MissingExtra("streamtasks.adserving", "adserving", exc.name) from None

if TYPE_CHECKING:
    from .system import AsyncProcessingSystem

__all__ = ["AsyncProcessingSystem"]


def __getattr__(name: str) -> Any:
    # The facade pulls in the built-ins and the database code: only when asked for (the
    # product's commands and dashboard panel import parts of this package without it).
    if name == "AsyncProcessingSystem":
        from .system import AsyncProcessingSystem

        return AsyncProcessingSystem
    raise AttributeError(f"module 'streamtasks.adserving' has no attribute {name!r}")
