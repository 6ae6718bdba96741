"""deploy/Dockerfile's build context makes an installable wheel: the files its ``COPY`` lines
bring in, and nothing else, are copied into a temporary directory, a wheel is built there the way
``pip install .`` in the image does (hatchling; without build isolation, so offline), installed
with ``pip install --target``, and the package is imported from it.

No Docker daemon needed. This is the check that failed when pyproject force-included files the
Dockerfile does not copy (``benchmarks/lean_loop.py``, ``scripts/services.py``)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def copy_instructions(text: str) -> list[tuple[list[str], str]]:
    """``(sources, destination)`` of every ``COPY`` of the Dockerfile (line continuations joined)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in words), "multi-stage COPY: extend this test"
        out.append((args[:-1], args[-1]))
    return out


def build_context(dest: Path) -> list[str]:
    """Copy what the Dockerfile copies (relative to WORKDIR) into ``dest``; return the sources."""
    sources = []
    for srcs, target in copy_instructions(DOCKERFILE.read_text()):
        into_dir = target.endswith("/") or len(srcs) > 1
        for src in srcs:
            path = ROOT / src
            assert path.exists(), f"the Dockerfile copies {src}, which is not in the repository"
            to = dest / target / path.name if into_dir else dest / target
            to.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, to, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, to)
            sources.append(src)
    return sources


def run(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env, cwd=cwd)
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_dockerfile_copies_the_package_its_metadata_and_the_schema() -> None:
    copied = {src for srcs, _ in copy_instructions(DOCKERFILE.read_text()) for src in srcs}
    assert {"pyproject.toml", "README.md", "streamtasks", "schema"} <= copied


@pytest.mark.timeout(180)
def test_wheel_built_from_exactly_the_dockerfile_context_installs_and_imports(tmp_path: Path) -> None:
    """The image's ``pip install .`` works on its context: the wheel has the package and the
    bundled schema, nothing from outside ``streamtasks/``, and imports from a bare target dir."""
    import hatchling  # noqa: F401  (the dev extra installs it: the build needs no network)

    ctx = tmp_path / "app"
    ctx.mkdir()
    build_context(ctx)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ctx)])
    (wheel,) = wheels.glob("streamtasks-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("streamtasks/", "streamtasks-"))]
    assert not outside, outside
    assert not [n for n in names if n.startswith("streamtasks/_bench")]
    assert "streamtasks/_schema/001_adserving.sql" in names
    assert {"streamtasks/__init__.py", "streamtasks/py.typed"} <= set(names)

    site = tmp_path / "site"
    run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)])
    probe = (
        "import importlib.resources, streamtasks, streamtasks.cli; print(streamtasks.__file__); "
        "schema = importlib.resources.files('streamtasks').joinpath('_schema'); "
        "print(*sorted(str(p) for p in schema.iterdir()))"
    )
    # The target dir first on sys.path; the dependencies come from this environment.
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = run([sys.executable, "-c", probe], env=env, cwd=tmp_path).stdout.split()
    assert out[0] == str(site / "streamtasks" / "__init__.py")
    assert out[1:] and all(p.startswith(str(site / "streamtasks" / "_schema")) for p in out[1:])
