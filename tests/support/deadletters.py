"""Dead letters written as the worker writes them, for the ``dlq`` tests."""

from __future__ import annotations

import redis as syncredis

from streamtasks.deadletter import dead_letter_fields
from streamtasks.retry import ErrorInfo


def add_dead(client: syncredis.Redis, key: str, error_type: str = "ValueError", stream: str = "jobs") -> str:
    """A dead letter as the worker writes it, for an entry ``k=<key>`` of ``stream``."""
    error = ErrorInfo(error_type, f"boom {key}", "handler_error", "Traceback ...")
    fields = dead_letter_fields(
        stream=stream, entry_id=f"1-{len(key)}", group="fault", handler="faultapp.jobs",
        error=error, attempts=4, raw={b"k": key.encode(), b"v": "ü\x00".encode()}, now_ms=1000,
    )  # fmt: skip
    fields += ["first_failure_ms", "900"]
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    return client.xadd(f"{stream}:dead", pairs).decode()  # type: ignore[arg-type,union-attr]
