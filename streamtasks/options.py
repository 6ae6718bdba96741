"""Checks of handler options that :mod:`streamtasks.registry` declares: the Ray options a
handler may set, the validators of numeric options, and how a handler's function travels to
another process (by reference when it can be imported there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Ray options a handler may set; anything else is an error, not silently ignored.
RAY_OPTIONS = frozenset(
    {"num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "runtime_env", "scheduling_strategy"}
)


def positive(_inst: object, attr: Any, value: int | float | None) -> None:
    """attrs validator: None or > 0."""
    if value is not None and value <= 0:
        raise ValueError(f"{attr.name} must be > 0, got {value!r}")


def non_negative(_inst: object, attr: Any, value: float | None) -> None:
    """attrs validator: None or >= 0."""
    if value is not None and value < 0:
        raise ValueError(f"{attr.name} must be >= 0, got {value!r}")


def fn_reference(fn: Callable[..., Any]) -> Any:
    """``(module, qualname)`` of an importable function, else the function itself (pickled
    whole: a function of ``__main__`` or a closure)."""
    module, qualname = fn.__module__, fn.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        return fn
    return (module, qualname)
