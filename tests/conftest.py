"""Shared fixtures: throwaway Redis and PostgreSQL servers, Ray, and subprocess helpers.

Fixtures (all fail the test, never skip it, when a service cannot be started):

- ``redis_server`` (session): a throwaway ``RedisServer`` (see ``scripts/services.py``) with
  ``.url``, ``.port``, ``.running``, ``.restart()``, ``.stop()``, ``.start()``, ``.kill()``.
- ``tls_redis_server`` (session): a second throwaway Redis serving TLS only, with a CA, a
  server and a client certificate made by ``openssl`` (``.certs``: ``.ca``,
  ``.client_cert``, ``.client_key``, ``.query()``); its ``.url`` is ``rediss://…`` with them.
- ``redis_url`` (session): its URL. ``redis`` (function): an async client
  (``decode_responses=False``) on a freshly FLUSHALLed server.
- ``redis_cluster`` (session): a throwaway Redis Cluster, 3 masters + 1 replica each
  (``RedisClusterServers``: ``.url``, ``.nodes``, ``.kill(i)``, ``.masters_now()``, ``.flush()``).
  ``cluster_redis`` (function): a cluster client (:func:`streamtasks.connect.connect`) on it,
  every master FLUSHALLed first.
- ``redis_sentinel`` (session): a throwaway Redis Sentinel set-up, a master and a replica
  watched by 3 sentinels (quorum 2, failover within ~2-3 s; ``RedisSentinelServers``:
  ``.url`` (``redis+sentinel://...``), ``.master()``, ``.kill_master()``,
  ``.wait_failover(port)``, ``.heal()``, ``.flush()``). ``sentinel_servers`` (function): the
  same, healed (every node up, the sentinels agreeing) and its master emptied.
- ``pg_server`` (session): a throwaway ``PostgresServer`` with ``.url(dbname)``,
  ``.create_database(name)``, ``.restart()``, ``.stop(mode)``, ``.start()``, ``.port``.
- ``database_url`` (function): DSN of a new, empty database for this test.
- ``timescale_server`` (session): a second throwaway PostgreSQL that preloads TimescaleDB;
  ``timescale_database_url`` (function): a new, empty database on it. These two skip the
  test, with one line saying why, when TimescaleDB is not installed (the only skip: the
  bootstrap installs it from ``../shared/timescaledb`` where that exists).
  ``STREAMTASKS_TEST_TIMESCALE_URL`` uses an existing TimescaleDB server instead.
- ``ray_address`` (session): Ray started once in this process; the GCS address that worker
  subprocesses join with ``--ray-address``. Only tests that ask for it pay for Ray.
- ``spawn`` (function): ``spawn(argv, env=..., cwd=..., name=...) -> ManagedProcess``,
  started, logs under ``tmp_path``, killed (with descendants) after the test.

The throwaway servers live in ``$TMPDIR/streamtasks-test-*`` (fixture ``services_root``);
servers left running by a killed session are stopped by the next session.

Environment: ``STREAMTASKS_TEST_REDIS_URL`` / ``STREAMTASKS_TEST_DATABASE_URL`` use existing
servers instead of throwaway ones; tests that restart or stop a server then fail with a
message saying they need a throwaway server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# Loaded here, before any test: its entry points run trio's plugin, whose warning would
# otherwise fail a run of tests that never import hypothesis, at its summary (filterwarnings=error).
import hypothesis  # noqa: F401
import pytest
import redis.asyncio as aioredis
from support import load_services
from support.procs import ManagedProcess, reap_orphan_actors

from streamtasks.connect import CLIENT_DEFAULTS
from streamtasks.ray.start import LOCAL_SYSTEM_CONFIG

TESTS_DIR = Path(__file__).resolve().parent
#: pytest's ``pythonpath`` setting puts these on this process' path; subprocesses (workers
#: started by tests) and Ray's worker processes import the test apps through PYTHONPATH.
IMPORT_DIRS = (TESTS_DIR / "apps", TESTS_DIR)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [*map(str, IMPORT_DIRS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

REDIS_URL_ENV = "STREAMTASKS_TEST_REDIS_URL"
DATABASE_URL_ENV = "STREAMTASKS_TEST_DATABASE_URL"
TIMESCALE_URL_ENV = "STREAMTASKS_TEST_TIMESCALE_URL"
RAY_NUM_CPUS = 2
#: Several workers (Ray drivers) share the session's Ray, each with worker processes of its own.
#: Ray's default keeps one idle process per CPU across all drivers and kills the rest after a
#: second: with two workers on two CPUs they are started and killed all the time, and on a busy
#: machine a batch waits seconds for one (docs/guides/scaling.md, "Several task-mode workers on
#: one small Ray cluster").
RAY_SYSTEM_CONFIG = {"num_workers_soft_limit": 4 * RAY_NUM_CPUS, **LOCAL_SYSTEM_CONFIG}
SESSION_DIR_PREFIX = "streamtasks-test-"

services = load_services()

#: ``streamtasks_app`` (the in-memory app). An installed streamtasks also registers it as the
#: ``pytest11`` entry point of this same name, so pytest loads it once either way.
pytest_plugins = ["streamtasks.testing.plugin"]


class RedisServerLike(Protocol):
    """What tests may use of ``redis_server``."""

    url: str
    port: int
    running: bool

    def start(self) -> Any: ...
    def stop(self) -> None: ...
    def restart(self) -> Any: ...
    def kill(self) -> None: ...


class PostgresServerLike(Protocol):
    """What tests may use of ``pg_server``."""

    port: int

    def url(self, dbname: str = ...) -> str: ...
    def create_database(self, name: str) -> str: ...
    def start(self) -> Any: ...
    def stop(self, mode: str = ...) -> None: ...
    def restart(self) -> Any: ...


def _needs_throwaway(kind: str, env: str) -> NoReturn:
    pytest.fail(
        f"this test restarts or stops {kind}: it needs a throwaway server, "
        f"but {env} points at an external one (unset it)",
        pytrace=False,
    )


class ExternalRedis:
    """An existing Redis server from ``STREAMTASKS_TEST_REDIS_URL``; cannot be restarted."""

    running = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = urlsplit(url).port or 6379

    def start(self) -> ExternalRedis:
        return self

    def stop(self) -> None:
        _needs_throwaway("Redis", REDIS_URL_ENV)

    def restart(self) -> NoReturn:
        _needs_throwaway("Redis", REDIS_URL_ENV)

    def kill(self) -> None:
        _needs_throwaway("Redis", REDIS_URL_ENV)


class ExternalPostgres:
    """An existing PostgreSQL from ``STREAMTASKS_TEST_DATABASE_URL``; cannot be restarted."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.port = urlsplit(url).port or 5432

    def url(self, dbname: str | None = None) -> str:
        """The configured DSN, with its database replaced by ``dbname`` if given."""
        if dbname is None:
            return self._url
        parts = urlsplit(self._url)
        return urlunsplit(parts._replace(path=f"/{dbname}"))

    def create_database(self, name: str) -> str:
        """Create database ``name`` on the external server and return its DSN."""
        _run_in_thread(_execute(self._url, f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def start(self) -> ExternalPostgres:
        return self

    def stop(self, mode: str = "fast") -> None:
        _needs_throwaway("PostgreSQL", DATABASE_URL_ENV)

    def restart(self) -> NoReturn:
        _needs_throwaway("PostgreSQL", DATABASE_URL_ENV)


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run_in_thread(coro: Any) -> None:
    """Run ``coro`` to completion on a private loop in another thread (from sync code)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


# --------------------------------------------------------------------------- state dir


def _stop_leftovers(root: Path) -> None:
    """Stop the servers of a dead test session kept under ``root`` and delete it."""
    for name in ("redis", "redis-tls"):
        with contextlib.suppress(services.ServiceError, OSError):
            services.RedisServer(root / name).kill()
    for node in sorted((root / "cluster").glob("node-*")):
        with contextlib.suppress(services.ServiceError, OSError):
            services.RedisServer(node).kill()
    with contextlib.suppress(services.ServiceError, OSError):
        services.RedisSentinelServers(root / "sentinel").kill()
    for name in ("pg", "tsdb"):
        if (root / name).is_dir():
            with contextlib.suppress(services.ServiceError, OSError):
                services.PostgresServer(root / name).stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


def _sweep_dead_sessions() -> None:
    """Stop servers left behind by test sessions that were killed before their teardown."""
    for root in Path(tempfile.gettempdir()).glob(f"{SESSION_DIR_PREFIX}*"):
        owner = services.read_int(root / "owner")
        if owner is not None and not services.pid_alive(owner):
            _stop_leftovers(root)


@pytest.fixture(scope="session")
def services_root() -> Iterator[Path]:
    """This session's directory for throwaway servers: ``$TMPDIR/streamtasks-test-*``.

    Not pytest's ``tmp_path``: the ``postgres`` OS user must be able to traverse it when
    tests run as root. It records the pytest pid in ``owner`` so that a later session can
    stop servers left running by a session that was killed (SIGKILL, CI timeout), which a
    normal teardown would have stopped. Deleted at the end of the session.
    """
    _sweep_dead_sessions()
    root = Path(tempfile.mkdtemp(prefix=SESSION_DIR_PREFIX))
    root.chmod(0o711)
    (root / "owner").write_text(f"{os.getpid()}\n")
    yield root
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server(services_root: Path) -> Iterator[RedisServerLike]:
    """A throwaway Redis (no persistence) for the session, or the external one if configured."""
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        yield ExternalRedis(external)
        return
    server = services.RedisServer(services_root / "redis")
    try:
        server.start()
    except (services.ServiceError, OSError) as exc:
        pytest.fail(f"could not start a throwaway redis-server: {exc}", pytrace=False)
    yield server
    server.kill()


@pytest.fixture(scope="session")
def tls_redis_server(services_root: Path) -> Iterator[Any]:
    """A throwaway Redis serving TLS only (client certificates required)."""
    server = services.RedisServer(services_root / "redis-tls", tls=True)
    try:
        server.start()
    except (services.ServiceError, OSError) as exc:
        pytest.fail(f"could not start a throwaway TLS redis-server: {exc}", pytrace=False)
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServerLike) -> str:
    """URL of the session's Redis server."""
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An async Redis client (bytes responses) on a server emptied with FLUSHALL."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False, **CLIENT_DEFAULTS)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(services_root: Path) -> Iterator[Any]:
    """A throwaway Redis Cluster (3 masters, 1 replica each, no persistence) for the session."""
    cluster = services.RedisClusterServers(services_root / "cluster")
    try:
        cluster.start()
    except (services.ServiceError, OSError) as exc:
        cluster.kill()
        pytest.fail(f"could not start a throwaway Redis Cluster: {exc}", pytrace=False)
    yield cluster
    cluster.kill()


@pytest.fixture
async def cluster_redis(redis_cluster: Any) -> AsyncIterator[aioredis.Redis]:
    """A cluster client (bytes responses) on the session's cluster, every master emptied."""
    from streamtasks.connect import connect

    await asyncio.to_thread(redis_cluster.wait_ok)
    await asyncio.to_thread(redis_cluster.flush)
    client = await connect(redis_cluster.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_sentinel(services_root: Path) -> Iterator[Any]:
    """A throwaway Redis Sentinel set-up (master, replica, 3 sentinels) for the session."""
    servers = services.RedisSentinelServers(services_root / "sentinel")
    try:
        servers.start()
    except (services.ServiceError, OSError) as exc:
        servers.kill()
        pytest.fail(f"could not start a throwaway Redis Sentinel set-up: {exc}", pytrace=False)
    yield servers
    servers.kill()


@pytest.fixture
async def sentinel_servers(redis_sentinel: Any) -> Any:
    """The session's Sentinel set-up with every node up (a test before may have killed its
    master) and the master emptied."""
    await asyncio.to_thread(redis_sentinel.heal)
    await asyncio.to_thread(redis_sentinel.flush)
    return redis_sentinel


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server(services_root: Path) -> Iterator[PostgresServerLike]:
    """A throwaway PostgreSQL cluster for the session, or the external one if configured."""
    external = os.environ.get(DATABASE_URL_ENV)
    if external:
        yield ExternalPostgres(external)
        return
    server = services.PostgresServer(services_root / "pg")
    try:
        server.start()
    except (services.ServiceError, OSError) as exc:
        pytest.fail(f"could not start a throwaway PostgreSQL: {exc}", pytrace=False)
    yield server
    server.stop("immediate")


@pytest.fixture
async def database_url(pg_server: PostgresServerLike) -> str:
    """DSN of an empty database for this test.

    On the throwaway server: a new database ``t_<8 hex>``. With
    ``STREAMTASKS_TEST_DATABASE_URL``: that database, with its ``public`` schema dropped
    and recreated.
    """
    if isinstance(pg_server, ExternalPostgres):
        dsn = pg_server.url()
        await _execute(dsn, "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
        return dsn
    name = f"t_{uuid.uuid4().hex[:8]}"
    try:
        return await asyncio.to_thread(pg_server.create_database, name)
    except services.ServiceError as exc:
        pytest.fail(f"could not create database {name}: {exc}", pytrace=False)


@pytest.fixture
async def schema(database_url: str) -> str:
    """``database_url`` with the built-ins' tables, without TimescaleDB (whatever this
    machine's PostgreSQL offers)."""
    from streamtasks.adserving.schema import setup_database

    conn = await asyncpg.connect(database_url)
    try:
        await setup_database(conn, timescaledb=False)
    finally:
        await conn.close()
    return database_url


# --------------------------------------------------------------------------- TimescaleDB


@pytest.fixture(scope="session")
def timescale_server(services_root: Path) -> Iterator[PostgresServerLike]:
    """A throwaway PostgreSQL with ``shared_preload_libraries=timescaledb`` for the session.

    Skips (one line) when TimescaleDB is not installed for this machine's PostgreSQL.
    """
    external = os.environ.get(TIMESCALE_URL_ENV)
    if external:
        yield ExternalPostgres(external)
        return
    if not services.timescaledb_installed():
        pytest.skip(
            "TimescaleDB is not installed (run scripts/services.py ensure-binaries as root "
            f"with {services.TIMESCALEDB_INSTALL} present)"
        )
    server = services.PostgresServer(services_root / "tsdb", preload=("timescaledb",))
    try:
        server.start()
    except (services.ServiceError, OSError) as exc:
        pytest.fail(f"could not start a throwaway PostgreSQL with TimescaleDB: {exc}", pytrace=False)
    yield server
    server.stop("immediate")


@pytest.fixture
async def timescale_database_url(timescale_server: PostgresServerLike) -> str:
    """DSN of an empty database on the TimescaleDB server (no extension created yet)."""
    if isinstance(timescale_server, ExternalPostgres):
        dsn = timescale_server.url()
        await _execute(dsn, "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
        return dsn
    name = f"ts_{uuid.uuid4().hex[:8]}"
    try:
        return await asyncio.to_thread(timescale_server.create_database, name)
    except services.ServiceError as exc:
        pytest.fail(f"could not create database {name}: {exc}", pytrace=False)


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="session")
def ray_address(redis_url: str) -> Iterator[str]:
    """Start Ray once in this process; return the GCS address subprocesses can join.

    Ray's worker processes inherit this process' environment at start, so handlers running
    in them find the test Redis in ``TEST_REDIS_URL``.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["TEST_REDIS_URL"] = redis_url
    # Ray worker processes inherit this environment: let them import the handler modules
    # that tests keep beside themselves (tests/integration/*_app.py, tests/fault/*_app.py).
    app_dirs = [str(TESTS_DIR / d) for d in ("integration", "fault")]
    os.environ["PYTHONPATH"] = os.pathsep.join([*app_dirs, os.environ.get("PYTHONPATH", "")])
    import ray

    from streamtasks.ray.registration import registration_polled

    try:
        with registration_polled():
            ray.init(
                address="local",  # a new Ray, never one a `ray start` on this machine left running
                num_cpus=RAY_NUM_CPUS,
                include_dashboard=False,
                log_to_driver=False,
                _system_config=RAY_SYSTEM_CONFIG,
            )
    except Exception as exc:  # any failure to start Ray fails the test
        pytest.fail(f"could not start Ray: {exc}", pytrace=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- processes


Spawn = Callable[..., ManagedProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Factory that starts ``ManagedProcess``es with logs in ``tmp_path/<name>-<n>``.

    Call as ``spawn(argv, env=None, cwd=None, name=None)``; every process still alive at
    the end of the test is SIGKILLed together with its descendants, and the actors of the
    killed actor-mode workers are waited for (:func:`support.procs.reap_orphan_actors`).
    """
    started: list[ManagedProcess] = []

    def _spawn(
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        name: str | None = None,
    ) -> ManagedProcess:
        label = name or Path(str(argv[0])).name
        log_dir = tmp_path / f"{label}-{len(started)}"
        proc = ManagedProcess(argv, log_dir=log_dir, env=env, cwd=cwd, name=label)
        started.append(proc)
        return proc.start()

    yield _spawn
    for proc in started:
        proc.kill9()
    if started:
        reap_orphan_actors()
