"""Loading ``MODULE:ATTR`` the way ``uvicorn app:app`` does, with one-line errors."""

from __future__ import annotations

import importlib
import os
import sys

from .errors import ConfigError, MissingExtra
from .registry import Registry


def load_registry(spec: str) -> Registry:
    """Import ``MODULE`` (from the current directory first) and return its Registry ``ATTR``.

    ``MODULE`` alone means ``MODULE:registry``. Raises :class:`ConfigError` with a one-line
    message when the module does not import or the attribute is not a Registry.
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "registry"
    if not module_name:
        raise ConfigError(f"{spec!r} is not MODULE:ATTR (e.g. app:registry)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except MissingExtra as exc:
        raise ConfigError(str(exc)) from None
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"cannot import module {module_name!r}: not found (cwd: {cwd})") from None
        raise ConfigError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Registry):
        raise ConfigError(f"{module_name}:{attr} is a {type(obj).__name__}, not a streamtasks Registry")
    return obj
