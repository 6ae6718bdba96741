"""The built-in handlers with ack-aware trimming (``soak.py``): an hours-long offered load must
not grow the stream, so every entry is deleted 10 s after every group acked it."""

from __future__ import annotations

from streamtasks.builtins import registry as builtins

registry = builtins.with_options(trim_acked_after=10.0)
