"""Helpers for the streamtasks test-suite: subprocesses, a TCP fault proxy, service servers.

pytest's ``pythonpath`` setting (pyproject) puts ``tests`` and ``tests/apps`` on ``sys.path``,
so test modules import these as ``from support.procs import ManagedProcess`` and
``from support.proxy import TcpProxy``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES_PATH = REPO_ROOT / "scripts" / "services.py"
SERVICES_MODULE = "streamtasks_test_services"


def load_services() -> ModuleType:
    """Import ``scripts/services.py`` (not a package) once and return the module."""
    if SERVICES_MODULE in sys.modules:
        return sys.modules[SERVICES_MODULE]
    spec = importlib.util.spec_from_file_location(SERVICES_MODULE, SERVICES_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SERVICES_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[SERVICES_MODULE] = module
    spec.loader.exec_module(module)
    return module
