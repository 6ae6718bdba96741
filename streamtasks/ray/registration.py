"""A local Ray's start without its one-second sleep on the raylet's registration.

``ray.init`` starting a local Ray asks the GCS for its new raylet's node about 0.1 s after it
spawned the raylet (``ray._private.services.get_node``). When the raylet has not registered
yet, the GCS client's ``GetNode`` sleeps one whole second before it asks again (a fixed
``sleep_for(seconds(1))`` in Ray's C++, no setting changes it): on this 2-core machine that
cost 1.0 s in about half of all local starts (measured on Ray 2.60, ``ray.init`` 2.96-3.68 s
with the poll below against 3.13-4.39 s without, six starts each).

:func:`registration_polled` replaces ``get_node`` for the length of one ``ray.init``: it
first asks the GCS for its node table every 20 ms (the same answer, without the sleep) until
the node is alive, then calls Ray's own ``get_node``, which then answers at once. On a Ray
without these private names it changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: How often the node table is asked for the new raylet, and for how long at most (Ray's own
#: ``raylet_start_wait_time_s`` is 30 s; past this Ray's ``get_node`` decides).
POLL_S = 0.02
WAIT_S = 30.0


@contextmanager
def registration_polled() -> Iterator[None]:
    """For the ``with`` block: Ray's ``get_node`` waits for the node by polling, not sleeping."""
    try:
        from ray._private import services, state
    except ImportError:  # another Ray's layout: leave it be
        yield
        return
    original = getattr(services, "get_node", None)
    options = getattr(services, "_get_gcs_client_options", None)
    if original is None or options is None:
        yield
        return

    def get_node(gcs_address: str, node_id: str) -> Any:
        _wait_alive(_node_table(state, options(gcs_address)), node_id)
        return original(gcs_address, node_id)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = original


def _node_table(state: Any, gcs_options: Any) -> Callable[[], list[dict[str, Any]]]:
    """The GCS node table, asked through one accessor (it connects at the first ask and keeps
    that connection for the polls after it)."""
    accessor = state.GlobalState()
    accessor._initialize_global_state(gcs_options)  # lazy: nothing is connected yet
    return lambda: list(accessor.node_table())


def _wait_alive(
    nodes: Callable[[], list[dict[str, Any]]],
    node_id: str,
    poll: float = POLL_S,
    wait: float = WAIT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """True once ``nodes()`` lists ``node_id`` alive, asked every ``poll`` seconds; False after
    ``wait`` seconds or when asking fails (Ray's own call then says what is wrong)."""
    deadline = clock() + wait
    while clock() < deadline:
        try:
            table = nodes()
        except Exception:  # the GCS not answering: not ours to report
            return False
        if any(node.get("NodeID") == node_id and node.get("Alive") for node in table):
            return True
        sleep(poll)
    return False
