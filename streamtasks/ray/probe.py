"""Ray as monitoring sees it: whether this process is connected, and the cluster's resources.

:class:`RayProbe` is the :class:`~streamtasks.worker.executors.Cluster` of a Ray executor and
of each actor's inline executor: the heartbeat, ``/metrics``, ``/readyz``, the dashboard and
the facade's status ask it, and none of them imports Ray. Works in a driver and inside an
actor alike; both calls block (Ray's client), so callers run them in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray


class RayProbe:
    """Asks the Ray this process is connected to (it never starts one)."""

    def connected(self) -> bool:
        try:
            return bool(ray.is_initialized())
        except Exception:  # a client failure means "not connected"
            return False

    def resources(self) -> Mapping[str, Mapping[str, float]] | None:
        """Total and available amounts of every resource but the per-node markers; None when
        Ray is not connected or does not answer (going down, GCS unreachable)."""
        if not self.connected():
            return None
        api: Any = ray  # ray's resource calls are untyped
        try:
            total, free = api.cluster_resources(), api.available_resources()
        except Exception:  # Ray's client raises many types while the GCS is unreachable
            return None
        names = sorted(name for name in total if not name.startswith("node:"))
        return {
            "total": {name: float(total[name]) for name in names},
            "available": {name: float(free.get(name, 0.0)) for name in names},
        }
