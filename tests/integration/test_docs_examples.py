"""Every code example of the docs site and the README runs (issue 30): the docs cannot drift
from the code. The rules (what runs, what a marker says) are in :mod:`support.docs_examples`.

A page runs top to bottom in a directory of its own, against the session's real services:
Redis (emptied first), a new PostgreSQL database when the page talks to one, the session's
Ray (a worker the page starts joins it through ``STREAMTASKS_RAY_ADDRESS``, as
``--ray-address`` would, with one actor, ``STREAMTASKS_ACTORS=1``, to keep the test short),
and the session's Redis Cluster for the page that shards on one. The environment carries
``REDIS_URL`` and ``DATABASE_URL``; the URLs an example spells out for a reader
(``redis://127.0.0.1:6379/0``, ``redis://any-cluster-node:6379/0``) are replaced by the
session's before it runs.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import inspect
import linecache
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from support.docs_examples import ROOT, Block, blocks, census, pages

import streamtasks.producer

pytestmark = pytest.mark.integration

#: A reader's URL in an example -> the fixture whose URL replaces it.
URLS = {"redis://127.0.0.1:6379/0": "redis_url", "redis://any-cluster-node:6379/0": "cluster_url"}
SHELL_TIMEOUT_S = 60.0
OUTPUT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
ALL_PAGES = pages()
#: A page that names one of these talks to PostgreSQL: it gets a new database.
DATABASE_WORDS = ("DATABASE_URL", "AsyncProcessingSystem", "streamtasks db ", "streamtasks stats")


def test_every_block_is_run_or_marked() -> None:
    """Parsing fails on a block that is neither run nor marked with a reason; a block another
    test runs is named in that test's file."""
    counts = census()
    for page in ALL_PAGES:
        for block in blocks(page):
            if block.kind == "elsewhere":
                other = ROOT / block.detail
                assert other.is_file(), f"{block.where}: {block.detail} does not exist"
                assert str(page.relative_to(ROOT)) in other.read_text(), (
                    f"{block.where}: {block.detail} does not read {page.relative_to(ROOT)}"
                )
    run = sum(n for kind, n in counts.items() if kind != "skip")
    total = sum(counts.values())
    print(f"docs examples: {total} blocks, {run} run, {counts['skip']} not run; {dict(counts)}")
    assert run > counts["skip"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    todo = [b for b in blocks(page) if b.kind not in ("skip", "elsewhere")]
    if not todo:
        return
    urls, env = _services(page.read_text(encoding="utf-8"), todo, request)
    monkeypatch = request.getfixturevalue("monkeypatch")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(streamtasks.producer, "_default", None)
    with _page_modules(tmp_path):
        asyncio.run(PageRun(page, tmp_path, urls).run(todo))


def _services(
    text: str, todo: list[Block], request: pytest.FixtureRequest
) -> tuple[dict[str, str], dict[str, str]]:
    """The session's services the page needs (Redis emptied, a new database, Ray, the cluster):
    the URLs that replace a reader's, and the environment."""
    urls = {"redis_url": request.getfixturevalue("redis_url")}
    if "any-cluster-node" in text:
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        urls["cluster_url"] = cluster.url
    sync_redis.Redis.from_url(urls["redis_url"]).flushall()
    env = {"REDIS_URL": urls["redis_url"]}
    if any(word in text for word in DATABASE_WORDS):
        env["DATABASE_URL"] = request.getfixturevalue("database_url")
    if any(b.kind == "background" for b in todo) or "start_workers" in text:
        env["STREAMTASKS_RAY_ADDRESS"] = request.getfixturevalue("ray_address")
        env["STREAMTASKS_ACTORS"] = "1"
    return urls, env


@contextlib.contextmanager
def _page_modules(directory: Path) -> Iterator[None]:
    """Forget the modules a page wrote (every page has its own ``app.py``)."""

    def forget() -> None:
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(directory)):
                del sys.modules[name]

    try:
        yield
    finally:
        forget()


class PageRun:
    """One page's blocks, in order, in ``directory``."""

    def __init__(self, page: Path, directory: Path, urls: dict[str, str]) -> None:
        self.page, self.directory, self.urls = page, directory, urls
        self.namespace: dict[str, Any] = {"__name__": "docs_example"}
        self.output: list[str] = []
        self.background: list[tuple[Block, asyncio.subprocess.Process, Path]] = []

    async def run(self, todo: list[Block]) -> None:
        try:
            for block in todo:
                await getattr(self, f"_{block.kind}")(block)
        finally:
            await self._close()

    def _code(self, block: Block) -> str:
        code = block.code
        for shown, fixture in URLS.items():
            if fixture in self.urls:
                code = code.replace(shown, self.urls[fixture])
        return code

    async def _file(self, block: Block) -> None:
        name = block.file_name
        assert name is not None
        (self.directory / name).write_text(self._code(block), encoding="utf-8")
        if name.endswith(".py"):
            importlib.invalidate_caches()
            module = importlib.import_module(name[:-3])
            self.namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})

    async def _python(self, block: Block) -> None:
        source = self._code(block)
        # tracebacks show the example's lines
        linecache.cache[block.where] = (len(source), None, source.splitlines(True), block.where)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        code = compile(source, block.where, "exec", flags=flags, dont_inherit=True)
        result = eval(code, self.namespace)  # the example is the test
        if inspect.iscoroutine(result):
            await asyncio.wait_for(result, SHELL_TIMEOUT_S)

    async def _bash(self, block: Block) -> None:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", self._code(block), cwd=self.directory,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), SHELL_TIMEOUT_S)
        except asyncio.TimeoutError:
            proc.kill()
            raise AssertionError(f"{block.where}: still running after {SHELL_TIMEOUT_S} s") from None
        text = out.decode(errors="replace")
        self.output.append(text)
        assert proc.returncode == 0, f"{block.where} exited {proc.returncode}:\n{text[-3000:]}"

    async def _background(self, block: Block) -> None:
        log = self.directory / f"background-{block.line}.log"
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", self._code(block), cwd=self.directory, stdout=sink, stderr=sink,
                start_new_session=True,
            )  # fmt: skip
        self.background.append((block, proc, log))

    async def _output(self, block: Block) -> None:
        wanted = [line.strip() for line in block.code.splitlines() if line.strip()]
        deadline = time.monotonic() + OUTPUT_TIMEOUT_S
        while True:
            seen = self._everything()
            missing = [line for line in wanted if line not in seen]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{block.where}: never printed {missing}; output:\n{seen[-4000:]}")
            await asyncio.sleep(0.1)

    def _everything(self) -> str:
        logs = [log.read_text(errors="replace") for _, _, log in self.background]
        return "\n".join([*self.output, *logs])

    async def _close(self) -> None:
        for block, proc, log in self.background:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                code = await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                raise AssertionError(
                    f"{block.where}: still running {STOP_TIMEOUT_S} s after SIGTERM"
                ) from None
            assert code == 0, f"{block.where}: exited {code} after SIGTERM:\n{log.read_text()[-3000:]}"
        producer = streamtasks.producer._default
        if producer is not None:
            await producer.close()
