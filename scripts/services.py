#!/usr/bin/env python3
"""Throwaway Redis and PostgreSQL servers for development, demos and tests.

Standard library only: this runs before the project's virtualenv exists.

Command line::

    python3 scripts/services.py start [--dir DIR]   # start (or reuse) both; print export lines
    python3 scripts/services.py env [--dir DIR]     # print export lines of running servers
    python3 scripts/services.py stop [--dir DIR]    # stop both
    python3 scripts/services.py ensure-binaries     # apt-get install them if missing (root),
                                                    # and TimescaleDB from ../shared/timescaledb

``DIR`` defaults to ``<repo>/.streamtasks/services``; Redis lives in ``DIR/redis`` and
PostgreSQL in ``DIR/pg``. Nothing is persisted by Redis (no RDB, no AOF) and PostgreSQL
runs with ``fsync=off``: these servers are for data you can lose.

As a module (the test-suite imports it)::

    redis = RedisServer(tmp / "redis"); redis.start(); redis.url
    tls = RedisServer(tmp / "tls", tls=True); tls.start(); tls.url   # TLS only, client certs
    cluster = RedisClusterServers(tmp / "cluster"); cluster.start(); cluster.url  # 3 masters + 3 replicas
    sentinel = RedisSentinelServers(tmp / "sentinel"); sentinel.start(); sentinel.url  # redis+sentinel://
    pg = PostgresServer(tmp / "pg"); pg.start(); pg.create_database("t1"); pg.url("t1")
    tsdb = PostgresServer(tmp / "tsdb", preload=("timescaledb",))  # if timescaledb_installed()
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".streamtasks" / "services"
HOST = "127.0.0.1"
DEFAULT_DATABASE = "streamtasks"
PG_SUPERUSER = "postgres"
PG_OS_USER = "postgres"
REDIS_START_TIMEOUT_S = 15.0
PG_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 25
APT_PACKAGES = ("redis-server", "redis-sentinel", "postgresql")
#: The dashboard's browser tests drive Debian's Chromium through its chromedriver.
BROWSER_PACKAGES = ("chromium", "chromium-driver")
#: TimescaleDB's installer, beside the repository (CI and this project's machines have it);
#: ``STREAMTASKS_TIMESCALEDB_INSTALL`` names another.
TIMESCALEDB_INSTALL = Path(
    os.environ.get("STREAMTASKS_TIMESCALEDB_INSTALL")
    or REPO_ROOT.parent / "shared" / "timescaledb" / "install.sh"
)
#: Settings of a cluster that preloads TimescaleDB: its workers fit, no telemetry.
TIMESCALEDB_SETTINGS = (
    "max_worker_processes=32",
    "timescaledb.max_background_workers=24",
    "timescaledb.telemetry_level=off",
)
PG_FAST_SETTINGS = (
    "fsync = off",
    "synchronous_commit = off",
    "full_page_writes = off",
    "max_connections = 200",
    "shared_buffers = 32MB",
    "log_min_messages = warning",
    "log_line_prefix = '%m [%p] '",
)


class ServiceError(RuntimeError):
    """A server could not be found, started or stopped; the message says why."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int, name: str | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (if ``name`` is given) runs ``name``.

    The name check guards against a stale pid file whose pid was reused (e.g. after a reboot).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no procfs: trust the signal check
    if stat.rpartition(")")[2].split()[0] == "Z":
        return False
    return name is None or name.encode() in cmdline


def read_int(path: Path) -> int | None:
    """The integer on the first line of ``path``, or None if missing or unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(check: Callable[[], object], timeout: float) -> bool:
    """Poll ``check()`` until it returns truthy or ``timeout`` seconds pass; return the result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(POLL_INTERVAL_S)
    return bool(check())


def is_root() -> bool:
    """True when running as uid 0 (PostgreSQL must then run as the postgres OS user)."""
    return os.geteuid() == 0


# --------------------------------------------------------------------------- binaries


def find_redis_server() -> Path | None:
    """Path of redis-server (``$STREAMTASKS_REDIS_SERVER``, PATH, /usr/bin), or None."""
    override = os.environ.get("STREAMTASKS_REDIS_SERVER")
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    return Path(found) if found else None


def find_redis_sentinel() -> Path | None:
    """Path of redis-sentinel (``$STREAMTASKS_REDIS_SENTINEL``, PATH, /usr/bin), or None
    (Debian's ``redis-sentinel`` package; the same program as redis-server, named so)."""
    override = os.environ.get("STREAMTASKS_REDIS_SENTINEL")
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    found = shutil.which("redis-sentinel") or (
        "/usr/bin/redis-sentinel" if os.path.exists("/usr/bin/redis-sentinel") else None
    )
    return Path(found) if found else None


def find_pg_bindir() -> Path | None:
    """PostgreSQL bin dir (``$STREAMTASKS_PG_BIN``, newest /usr/lib/postgresql/*/bin, PATH)."""
    override = os.environ.get("STREAMTASKS_PG_BIN")
    if override:
        return Path(override) if os.access(Path(override) / "initdb", os.X_OK) else None
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if candidates:
        newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name.split(".")[0]))
        return Path(newest).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_binaries() -> list[str]:
    """Names of the Debian packages whose binaries are missing."""
    missing = []
    if find_redis_server() is None:
        missing.append("redis-server")
    if find_redis_sentinel() is None:
        missing.append("redis-sentinel")
    if find_pg_bindir() is None:
        missing.append("postgresql")
    return missing


def ensure_binaries() -> None:
    """Make sure redis-server and the PostgreSQL binaries exist.

    When one is missing and we are root (and ``STREAMTASKS_NO_APT`` is not ``1``), run
    ``apt-get update && apt-get install -y redis-server postgresql``; otherwise raise
    ServiceError with a one-line message.
    """
    missing = missing_binaries()
    if not missing:
        return
    if not is_root() or os.environ.get("STREAMTASKS_NO_APT") == "1":
        raise ServiceError(
            f"missing {', '.join(missing)}: install them (apt-get install -y "
            f"{' '.join(APT_PACKAGES)}) or set STREAMTASKS_REDIS_SERVER / STREAMTASKS_PG_BIN"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"services: installing {' '.join(APT_PACKAGES)} with apt-get", file=sys.stderr)
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *APT_PACKAGES]):
        if subprocess.run(argv, env=env, check=False).returncode != 0:
            raise ServiceError(f"'{' '.join(argv)}' failed; install {' '.join(missing)} by hand")
    still = missing_binaries()
    if still:
        raise ServiceError(f"still missing after apt-get install: {', '.join(still)}")


def find_chromium() -> tuple[Path | None, Path | None]:
    """Chromium and its chromedriver (``$STREAMTASKS_CHROMIUM`` / ``$STREAMTASKS_CHROMEDRIVER``,
    else PATH), each None when missing."""
    env = os.environ.get
    browser = env("STREAMTASKS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = env("STREAMTASKS_CHROMEDRIVER") or shutil.which("chromedriver")
    return (Path(browser) if browser else None), (Path(driver) if driver else None)


def ensure_browser() -> str:
    """Install Chromium and chromedriver when missing (root, apt allowed); a one-line status.

    Never fails the bootstrap: where they cannot be installed the browser tests skip, each
    with one line saying why.
    """
    if all(find_chromium()):
        return "chromium: installed"
    if not is_root() or os.environ.get("STREAMTASKS_NO_APT") == "1":
        return f"chromium: missing (browser tests will skip); apt-get install -y {' '.join(BROWSER_PACKAGES)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"services: installing {' '.join(BROWSER_PACKAGES)} with apt-get", file=sys.stderr)
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *BROWSER_PACKAGES]):
        if subprocess.run(argv, env=env, check=False).returncode != 0:
            return f"chromium: '{' '.join(argv)}' failed (browser tests will skip)"
    return "chromium: installed" if all(find_chromium()) else "chromium: still missing after apt-get"


def pg_major(bindir: Path) -> str:
    """The PostgreSQL major version of ``bindir`` (``/usr/lib/postgresql/15/bin`` -> ``15``)."""
    out = subprocess.run(
        [str(bindir / "pg_config"), "--version"], capture_output=True, text=True, check=False
    )
    if out.returncode == 0 and out.stdout.split():
        return out.stdout.split()[1].split(".")[0]
    return bindir.parent.name


def timescaledb_installed(bindir: Path | None = None) -> bool:
    """True if the TimescaleDB extension files are installed for the PostgreSQL in ``bindir``."""
    bindir = bindir or find_pg_bindir()
    if bindir is None:
        return False
    out = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    )
    sharedir = (
        Path(out.stdout.strip()) if out.returncode == 0 else Path(f"/usr/share/postgresql/{pg_major(bindir)}")
    )
    return (sharedir / "extension" / "timescaledb.control").exists()


def ensure_timescaledb(installer: Path = TIMESCALEDB_INSTALL) -> str:
    """Install TimescaleDB with ``installer`` when it exists and we are root; say what happened.

    The installer runs even when TimescaleDB is installed already: it is idempotent (it says
    "already installed" when the files match), and it replaces an older build of the same
    version in place (2.28.3 without the background-job fix of ``../shared/timescaledb``), which
    a check for the files alone would keep. A server that had loaded the replaced files needs a
    restart (the test servers are new each session). Never raises: without TimescaleDB the
    TimescaleDB tests skip (with one line saying why).
    """
    bindir = find_pg_bindir()
    if bindir is None:
        return "timescaledb: no PostgreSQL"
    installed = timescaledb_installed(bindir)
    if not installer.exists():
        if installed:
            return "timescaledb: installed"
        return f"timescaledb: not installed, and no installer at {installer}"
    if not is_root():
        if installed:
            return f"timescaledb: installed (not root: not compared with {installer})"
        return f"timescaledb: not installed; run {installer} as root"
    result = subprocess.run([str(installer), pg_major(bindir)], capture_output=True, text=True, check=False)
    if result.returncode != 0 or not timescaledb_installed(bindir):
        return f"timescaledb: {installer} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}"
    said = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "installed"
    if installed and "already installed" not in said:
        said += " (restart the PostgreSQL servers that had loaded the old files: scripts/services.py stop)"
    return f"timescaledb: {said}"


# --------------------------------------------------------------------------- redis


def redis_ping(port: int, timeout: float = 1.0, tls: ssl.SSLContext | None = None) -> bool:
    """True if a Redis server on 127.0.0.1:``port`` answers PING with PONG (over ``tls`` if given)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as raw:
            sock = tls.wrap_socket(raw, server_hostname=HOST) if tls else raw
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:  # ssl.SSLError included
        return False


class Certificates:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate,
    made with the ``openssl`` command in ``dir`` (kept: a restart reuses them)."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.ca = dir / "ca.crt"
        self.server_cert, self.server_key = dir / "server.crt", dir / "server.key"
        self.client_cert, self.client_key = dir / "client.crt", dir / "client.key"

    def make(self) -> Certificates:
        if self.client_cert.exists():
            return self
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ServiceError("openssl not found: it makes the test certificates (apt-get install openssl)")
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._run(openssl, "req", "-x509", *key, "-days", "30", "-subj", "/CN=streamtasks test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                  "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
        for name, usage, san in (
            ("server", "serverAuth", f"subjectAltName=IP:{HOST},DNS:localhost\n"),
            ("client", "clientAuth", ""),
        ):
            (self.dir / f"{name}.ext").write_text(
                f"{san}basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
            )
            self._run(openssl, "req", *key, "-subj", f"/CN=streamtasks test {name}",
                      "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
            self._run(openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                      "-CAcreateserial", "-days", "30", "-extfile", f"{name}.ext",
                      "-out", f"{name}.crt")  # fmt: skip
        return self

    def _run(self, *argv: str) -> None:
        result = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()[-500:]}")

    def client_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        """An SSL context trusting the CA (and presenting the client certificate)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def query(self, *, with_cert: bool = True) -> str:
        """The ``rediss://`` URL query naming the CA (and the client certificate and key)."""
        query = f"ssl_ca_certs={self.ca}"
        if with_cert:
            query += f"&ssl_certfile={self.client_cert}&ssl_keyfile={self.client_key}"
        return query


class _ServiceDir:
    """A throwaway server kept in ``dir``, on a port chosen once and recorded in ``dir/port``."""

    def __init__(self, dir: Path | str, port: int | None = None) -> None:
        self.dir = Path(dir).resolve()
        self._port = port

    @property
    def portfile(self) -> Path:
        """The file recording the chosen port."""
        return self.dir / "port"

    @property
    def port(self) -> int:
        """The server's TCP port (chosen on first use, then fixed)."""
        if self._port is None:
            self._port = read_int(self.portfile) or free_port()
        return self._port


class RedisServer(_ServiceDir):
    """A throwaway redis-server on 127.0.0.1 without persistence, kept in ``dir``.

    ``dir`` holds ``redis.pid``, ``redis.log`` and ``port``. The port is chosen once (free
    port unless given) and kept across ``restart()``, so clients can reconnect to the same
    URL. If a server started from the same ``dir`` is already running, ``start()`` reuses
    it (also across processes).

    ``tls=True``: TLS only (``--port 0 --tls-port PORT``), with certificates made in
    ``dir/tls`` (:class:`Certificates`, ``.certs``) and client certificates required
    (``--tls-auth-clients yes``); ``.url`` is ``rediss://…?ssl_ca_certs=…&ssl_certfile=…``.
    """

    #: What the process' command line says it runs (a stale pid file may name another program).
    process_name = "redis-server"

    def __init__(self, dir: Path | str, port: int | None = None, *, tls: bool = False) -> None:
        super().__init__(dir, port)
        self.certs = Certificates(self.dir / "tls") if tls else None

    # paths ------------------------------------------------------------------
    @property
    def pidfile(self) -> Path:
        """The pid file redis-server writes."""
        return self.dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        """The server's log file."""
        return self.dir / "redis.log"

    # state ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (TLS: ``rediss://127.0.0.1:PORT/0?ssl_ca_certs=…``)."""
        if self.certs is not None:
            return f"rediss://{HOST}:{self.port}/0?{self.certs.query()}"
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid if its pid file names a live process, else None."""
        pid = read_int(self.pidfile)
        return pid if pid is not None and pid_alive(pid, self.process_name) else None

    @property
    def running(self) -> bool:
        """True if the server process is alive."""
        return self.pid is not None

    # lifecycle --------------------------------------------------------------
    def start(self, timeout: float = REDIS_START_TIMEOUT_S) -> RedisServer:
        """Start the server (or reuse a running one) and wait until it answers PING."""
        if self.running:
            recorded = read_int(self.portfile)
            if recorded is not None:
                self._port = recorded
            self._wait_ready(timeout)
            return self
        binary = find_redis_server()
        if binary is None:
            raise ServiceError("redis-server not found: run 'scripts/services.py ensure-binaries'")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.certs is not None:
            self.certs.make()
        self.portfile.write_text(f"{self.port}\n")
        self.pidfile.unlink(missing_ok=True)
        result = subprocess.run(self._argv(binary), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"redis-server exited {result.returncode}: {result.stderr.strip()}\n{log_tail(self.logfile)}"
            )
        self._wait_ready(timeout)
        return self

    def _argv(self, binary: Path) -> list[str]:
        c = self.certs
        ports = ["--port", str(self.port)] if c is None else [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(c.server_cert),
            "--tls-key-file", str(c.server_key), "--tls-ca-cert-file", str(c.ca), "--tls-auth-clients", "yes",
        ]  # fmt: skip
        return [
            str(binary),
            "--bind", HOST,
            *ports,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "yes",
            "--protected-mode", "no",
            "--dir", str(self.dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
        ]  # fmt: skip

    def _wait_ready(self, timeout: float) -> None:
        tls = self.certs.client_context() if self.certs is not None else None
        if not wait_until(lambda: redis_ping(self.port, tls=tls), timeout):
            raise ServiceError(
                f"redis-server on port {self.port} did not answer PING within {timeout:.0f}s; "
                f"log tail ({self.logfile}):\n{log_tail(self.logfile)}"
            )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server with SIGTERM (nothing is saved) and wait for it to exit."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGKILL the server (a crash) and wait until the process is gone."""
        self._signal_and_wait(signal.SIGKILL, timeout)

    def restart(self) -> RedisServer:
        """Stop and start again on the same port; all data is lost (no persistence)."""
        self.stop()
        return self.start()

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not wait_until(lambda: not pid_alive(pid), timeout):
            raise ServiceError(f"redis-server pid {pid} still alive {timeout:.0f}s after {sig.name}")
        self.pidfile.unlink(missing_ok=True)


def redis_command(port: int, *argv: str, timeout: float = 5.0) -> str:
    """Run one command with ``redis-cli`` against 127.0.0.1:``port``; return its output ("" on failure)."""
    cli = find_redis_cli()
    if cli is None:
        raise ServiceError("redis-cli not found beside redis-server")
    try:
        result = subprocess.run(
            [str(cli), "-h", HOST, "-p", str(port), *argv],
            capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return ""
    return result.stdout if result.returncode == 0 else ""


def find_redis_cli() -> Path | None:
    """Path of redis-cli: beside redis-server, else on PATH."""
    server = find_redis_server()
    if server is not None and (server.parent / "redis-cli").exists():
        return server.parent / "redis-cli"
    found = shutil.which("redis-cli")
    return Path(found) if found else None


#: A cluster node also listens on its port + 10000 (the cluster bus), so its port stays below this.
CLUSTER_PORT_RANGE = (20000, 55000)
CLUSTER_BUS_OFFSET = 10000


def free_cluster_port() -> int:
    """A port ``p`` such that ``p`` and ``p + 10000`` (the cluster bus) were free a moment ago."""
    import random

    for _ in range(200):
        port = random.randint(*CLUSTER_PORT_RANGE)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((HOST, port))
                b.bind((HOST, port + CLUSTER_BUS_OFFSET))
        except OSError:
            continue
        return port
    raise ServiceError("no free port pair for a cluster node")


class ClusterNode(RedisServer):
    """One redis-server of a :class:`RedisClusterServers` (``cluster-enabled yes``)."""

    def __init__(self, dir: Path | str, port: int | None = None, node_timeout_ms: int = 2000) -> None:
        super().__init__(dir, port)
        self.node_timeout_ms = node_timeout_ms

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = read_int(self.portfile) or free_cluster_port()
        return self._port

    def _argv(self, binary: Path) -> list[str]:
        return [
            *super()._argv(binary),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-replica-validity-factor", "0",  # a replica may always take over
        ]  # fmt: skip

    def cluster_info(self) -> dict[str, str]:
        """``CLUSTER INFO`` as a dict (empty when the node does not answer)."""
        out = redis_command(self.port, "cluster", "info")
        return dict(line.split(":", 1) for line in out.split() if ":" in line)

    @property
    def role(self) -> str:
        """``master``, ``slave`` or ``""`` (not answering)."""
        out = redis_command(self.port, "role")
        return out.split()[0] if out else ""


class RedisClusterServers:
    """A throwaway Redis Cluster on 127.0.0.1: ``masters`` masters with ``replicas`` replicas
    each (``redis-cli --cluster create``), without persistence, kept in ``dir/node-<i>``.

    ``url`` names the first node; any node works for a cluster client. ``kill(i)`` /
    ``start_node(i)`` crash and restart one node (a killed master's replica is promoted after
    the node timeout, 2 s here).
    """

    def __init__(self, dir: Path | str, masters: int = 3, replicas: int = 1) -> None:
        self.dir = Path(dir).resolve()
        self.masters, self.replicas = masters, replicas
        self.nodes = [ClusterNode(self.dir / f"node-{i}") for i in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the first node that answers."""
        for node in self.nodes:
            if node.running:
                return node.url
        return self.nodes[0].url

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout: float = 60.0) -> RedisClusterServers:
        """Start every node (reusing running ones); create the cluster if it has no slots yet;
        wait until every node reports ``cluster_state:ok``."""
        for node in self.nodes:
            node.start()
        if self.nodes[0].cluster_info().get("cluster_slots_assigned") != "16384":
            cli = find_redis_cli()
            if cli is None:
                raise ServiceError("redis-cli not found beside redis-server")
            argv = [str(cli), "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports),
                    "--cluster-replicas", str(self.replicas), "--cluster-yes"]  # fmt: skip
            result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
            if result.returncode != 0:
                output = f"{result.stdout[-800:]}{result.stderr}"
                raise ServiceError(f"redis-cli --cluster create failed: {output}")
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Wait until every running node says ``cluster_state:ok`` with all slots served."""

        def ok() -> bool:
            running = [n for n in self.nodes if n.running]
            return bool(running) and all(n.cluster_info().get("cluster_state") == "ok" for n in running)

        if not wait_until(ok, timeout):
            raise ServiceError(f"Redis Cluster in {self.dir} not ok within {timeout:.0f}s")

    def masters_now(self) -> list[ClusterNode]:
        """Nodes that are masters right now."""
        return [n for n in self.nodes if n.running and n.role == "master"]

    def kill(self, index: int | None = None) -> None:
        """SIGKILL node ``index`` (every node when None)."""
        for node in self.nodes if index is None else [self.nodes[index]]:
            node.kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flush(self) -> None:
        """FLUSHALL on every master."""
        for node in self.masters_now():
            redis_command(node.port, "flushall")


# --------------------------------------------------------------------------- sentinel


class SentinelDataNode(RedisServer):
    """A Redis of a :class:`RedisSentinelServers`: a master, or a replica of ``replica_of``."""

    def __init__(self, dir: Path | str, port: int | None = None) -> None:
        super().__init__(dir, port)
        self.replica_of: int | None = None

    def _argv(self, binary: Path) -> list[str]:
        argv = [*super()._argv(binary), "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if self.replica_of is not None:
            argv += ["--replicaof", HOST, str(self.replica_of)]
        return argv

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict (empty when the node does not answer)."""
        out = redis_command(self.port, "info", section)
        return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)


class SentinelNode(RedisServer):
    """One redis-sentinel watching ``service`` (its config file is written at each start:
    a sentinel rewrites it with what it learns)."""

    process_name = "redis-sentinel"

    def __init__(
        self, dir: Path | str, service: str, master_port: int, quorum: int, settings: Sequence[str]
    ) -> None:
        super().__init__(dir)
        self.service, self.first_master, self.quorum, self.settings = service, master_port, quorum, settings

    @property
    def url(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = REDIS_START_TIMEOUT_S) -> SentinelNode:
        if self.running:
            self._wait_ready(timeout)
            return self
        binary = find_redis_sentinel()
        if binary is None:
            raise ServiceError("redis-sentinel not found: run 'scripts/services.py ensure-binaries'")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.portfile.write_text(f"{self.port}\n")
        self.pidfile.unlink(missing_ok=True)
        conf = self.dir / "sentinel.conf"
        lines = [
            f"port {self.port}", f"bind {HOST}", "daemonize yes", "protected-mode no",
            f"dir {self.dir}", f"pidfile {self.pidfile}", f"logfile {self.logfile}",
            f"sentinel monitor {self.service} {HOST} {self.first_master} {self.quorum}",
            *(f"sentinel {line}" for line in self.settings),
        ]
        conf.write_text("\n".join(lines) + "\n")
        result = subprocess.run([str(binary), str(conf)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"redis-sentinel exited {result.returncode}: {result.stderr.strip()}")
        self._wait_ready(timeout)
        return self

    def master(self) -> dict[str, str]:
        """``SENTINEL MASTER service`` as a dict (empty when the sentinel does not answer)."""
        out = redis_command(self.port, "sentinel", "master", self.service).split("\n")
        return dict(zip(out[0::2], out[1::2], strict=False))

    def master_port(self) -> int | None:
        """The port of the master this sentinel names now."""
        out = redis_command(self.port, "sentinel", "get-master-addr-by-name", self.service).split()
        return int(out[1]) if len(out) == 2 and out[1].isdigit() else None


#: Sentinels that must agree a master is down before one of them fails it over.
QUORUM = 2


class RedisSentinelServers:
    """A throwaway Redis Sentinel set-up on 127.0.0.1: a master and a replica (no persistence)
    watched by ``sentinels`` sentinels (quorum 2) that fail over quickly (the master is judged
    down after ``down_after_ms``), kept in ``dir``. ``url`` is the ``redis+sentinel://`` URL.

    ``kill_master()`` SIGKILLs the current master; ``wait_failover(old)`` waits until every
    sentinel names another master that says so itself; ``heal()`` restarts dead nodes as
    replicas of the current master."""

    def __init__(
        self, dir: Path | str, service: str = "mymaster", sentinels: int = 3,
        down_after_ms: int = 1000, failover_timeout_ms: int = 2000,
    ) -> None:
        self.dir = Path(dir).resolve()
        self.service = service
        self.nodes = [SentinelDataNode(self.dir / f"node-{i}") for i in range(2)]
        settings = [
            f"down-after-milliseconds {service} {down_after_ms}",
            f"failover-timeout {service} {failover_timeout_ms}",
            f"parallel-syncs {service} 1",
        ]
        self.sentinels = [
            SentinelNode(self.dir / f"sentinel-{i}", service, self.nodes[0].port, QUORUM, settings)
            for i in range(sentinels)
        ]

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(s.url for s in self.sentinels)}/{self.service}/0"

    def start(self, timeout: float = 30.0) -> RedisSentinelServers:
        if any(s.running for s in self.sentinels):  # left running (another process): reuse it
            self.heal(timeout)
            return self
        master, replica = self.nodes
        master.replica_of = None
        master.start()
        replica.replica_of = master.port
        replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_ready(timeout)
        return self

    def master_port(self) -> int | None:
        """The master's port as most sentinels name it."""
        named = [p for p in (s.master_port() for s in self.sentinels if s.running) if p is not None]
        return max(set(named), key=named.count) if named else None

    def master(self) -> SentinelDataNode:
        port = self.master_port()
        for node in self.nodes:
            if node.port == port:
                return node
        raise ServiceError(f"no sentinel names a master of {self.service} in {self.dir}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every sentinel agrees on a live master, knows the live replica and the
        other sentinels, and the replica's link to the master is up."""

        def ready() -> bool:
            port = self.master_port()
            live = [n for n in self.nodes if n.running]
            if port is None or any(s.master_port() != port for s in self.sentinels):
                return False
            replicas = [n for n in live if n.port != port]
            if any(n.info("replication").get("master_link_status") != "up" for n in replicas):
                return False
            others = str(len(self.sentinels) - 1)
            return all(
                s.master().get("num-other-sentinels") == others
                and s.master().get("num-slaves") == str(len(replicas))
                and "s_down" not in s.master().get("flags", "")
                for s in self.sentinels
            )

        if not wait_until(ready, timeout):
            states = [s.master() for s in self.sentinels]
            raise ServiceError(f"Sentinel set-up in {self.dir} not ready within {timeout:.0f}s: {states}")

    def kill_master(self) -> SentinelDataNode:
        """SIGKILL the current master (a crash); returns it."""
        node = self.master()
        node.kill()
        return node

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> SentinelDataNode:
        """Wait until every sentinel names a master other than ``old_port`` that is one."""

        def moved() -> bool:
            ports = {s.master_port() for s in self.sentinels}
            if len(ports) != 1 or old_port in ports or None in ports:
                return False
            return self.master().info("replication").get("role") == "master"

        if not wait_until(moved, timeout):
            raise ServiceError(f"no failover away from port {old_port} within {timeout:.0f}s")
        return self.master()

    def heal(self, timeout: float = 30.0) -> None:
        """Restart dead nodes as replicas of the current master; wait until all is ready."""
        master = self.master()
        for node in self.nodes:
            if not node.running:
                node.replica_of = master.port
                node.start()
        self.wait_ready(timeout)

    def flush(self) -> None:
        redis_command(self.master().port, "flushall")

    def kill(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            server.kill()


# --------------------------------------------------------------------------- postgres


class PostgresServer(_ServiceDir):
    """A throwaway PostgreSQL cluster on 127.0.0.1, kept in ``dir``.

    ``dir/data`` is the cluster (created by initdb on first start, trust auth, superuser
    ``postgres``, fast unsafe settings such as ``fsync=off``); ``dir`` also holds the unix
    socket, ``postgres.log`` and ``port``. The port is chosen once and kept across
    ``restart()``. When running as root, the server runs as the ``postgres`` OS user and
    ``dir`` is chowned to it, so every parent of ``dir`` must be traversable by that user
    (``/tmp/...`` is; pytest's ``tmp_path`` is not). ``preload`` names libraries for
    ``shared_preload_libraries`` (``("timescaledb",)`` also applies ``TIMESCALEDB_SETTINGS``).
    """

    def __init__(self, dir: Path | str, port: int | None = None, *, preload: Sequence[str] = ()) -> None:
        super().__init__(dir, port)
        self.preload = tuple(preload)
        settings = [f"shared_preload_libraries={','.join(self.preload)}"] if self.preload else []
        if "timescaledb" in self.preload:
            settings.extend(TIMESCALEDB_SETTINGS)
        self.settings = tuple(settings)

    # paths ------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """PGDATA of the cluster."""
        return self.dir / "data"

    @property
    def logfile(self) -> Path:
        """The server's log file."""
        return self.dir / "postgres.log"

    def url(self, dbname: str = DEFAULT_DATABASE) -> str:
        """DSN ``postgresql://postgres@127.0.0.1:PORT/dbname``."""
        return f"postgresql://{PG_SUPERUSER}@{HOST}:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid if ``postmaster.pid`` names a live process, else None."""
        pid = read_int(self.data_dir / "postmaster.pid")
        return pid if pid is not None and pid_alive(pid, "postgres") else None

    @property
    def running(self) -> bool:
        """True if the postmaster is alive."""
        return self.pid is not None

    # running binaries -------------------------------------------------------
    def _bin(self, name: str) -> str:
        bindir = find_pg_bindir()
        if bindir is None or not (bindir / name).exists():
            raise ServiceError(
                f"PostgreSQL binary {name} not found: run 'scripts/services.py ensure-binaries'"
            )
        return str(bindir / name)

    def _run(self, argv: Sequence[str], what: str) -> str:
        """Run a PostgreSQL tool (as the postgres OS user when root); return its stdout."""
        full = ["runuser", "-u", PG_OS_USER, "--", *argv] if is_root() else list(argv)
        result = subprocess.run(full, capture_output=True, text=True, check=False, cwd=self.dir, timeout=300)
        if result.returncode != 0:
            raise ServiceError(
                f"{what} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}\n"
                f"log tail ({self.logfile}):\n{log_tail(self.logfile)}"
            )
        return result.stdout

    def _prepare_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.portfile.write_text(f"{self.port}\n")
        if not is_root():
            return
        try:
            user = pwd.getpwnam(PG_OS_USER)
        except KeyError:
            raise ServiceError(f"OS user '{PG_OS_USER}' missing: install the postgresql package") from None
        self.dir.chmod(0o700)
        for path in [self.dir, *self.dir.rglob("*")]:
            os.lchown(path, user.pw_uid, user.pw_gid)
        probe = subprocess.run(["runuser", "-u", PG_OS_USER, "--", "test", "-w", str(self.dir)], check=False)
        if probe.returncode != 0:
            raise ServiceError(
                f"the '{PG_OS_USER}' OS user cannot reach {self.dir}: use a directory whose "
                "parents are world-traversable (e.g. under /tmp)"
            )

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run(
            [self._bin("initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            "initdb",
        )  # fmt: skip
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# streamtasks throwaway settings\n")
            conf.write("\n".join(PG_FAST_SETTINGS) + "\n")

    # lifecycle --------------------------------------------------------------
    def start(self, timeout: float = PG_START_TIMEOUT_S) -> PostgresServer:
        """Start the cluster (initdb first if needed; reuse it if running) and wait until ready.

        Also creates the ``streamtasks`` database if it does not exist.
        """
        if self.running:
            recorded = read_int(self.portfile)
            if recorded is not None:
                self._port = recorded
        else:
            self._prepare_dir()
            self._initdb()
            options = f"-p {self.port} -k '{self.dir}' -c listen_addresses={HOST}"
            options += "".join(f" -c {setting}" for setting in self.settings)
            self._run(
                [self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.logfile),
                 "-o", options, "-w", "-t", str(int(timeout)), "start"],
                "pg_ctl start",
            )  # fmt: skip
        self._wait_ready(timeout)
        if not self.database_exists(DEFAULT_DATABASE):
            self.create_database(DEFAULT_DATABASE)
        return self

    def _is_ready(self) -> bool:
        argv = [self._bin("pg_isready"), "-q", "-h", HOST, "-p", str(self.port), "-t", "1"]
        return subprocess.run(argv, check=False).returncode == 0

    def _wait_ready(self, timeout: float) -> None:
        if not wait_until(self._is_ready, timeout):
            raise ServiceError(
                f"PostgreSQL on port {self.port} not ready within {timeout:.0f}s; "
                f"log tail ({self.logfile}):\n{log_tail(self.logfile)}"
            )

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster with ``pg_ctl stop -m mode`` (smart, fast or immediate)."""
        if not self.running:
            return
        self._run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w",
             "-t", str(int(STOP_TIMEOUT_S)), "stop"],
            "pg_ctl stop",
        )  # fmt: skip

    def restart(self, mode: str = "fast") -> PostgresServer:
        """Stop (``mode``) and start again on the same port; committed data survives."""
        self.stop(mode)
        return self.start()

    # SQL ----------------------------------------------------------------------
    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser over TCP; return its unaligned output."""
        return self._run(
            [self._bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.url(dbname), "-c", sql],
            "psql",
        ).strip()  # fmt: skip

    def database_exists(self, name: str) -> bool:
        """True if a database called ``name`` exists."""
        literal = name.replace("'", "''")
        return self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{literal}'") == "1"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by postgres) and return its DSN."""
        self.psql(f"CREATE DATABASE {quote_ident(name)}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions first."""
        self.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def quote_ident(name: str) -> str:
    """Quote ``name`` as a PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- CLI


def env_lines(redis: RedisServer, pg: PostgresServer) -> list[str]:
    """``KEY=value`` lines for the two servers."""
    return [f"REDIS_URL={redis.url}", f"DATABASE_URL={pg.url(DEFAULT_DATABASE)}"]


def servers(base: Path) -> tuple[RedisServer, PostgresServer]:
    """The Redis and PostgreSQL servers kept under ``base``."""
    return RedisServer(base / "redis"), PostgresServer(base / "pg")


def cmd_start(base: Path) -> None:
    """Start (or reuse) both servers, write ``base/env`` and print export lines."""
    ensure_binaries()
    redis, pg = servers(base)
    redis.start()
    pg.start()
    lines = env_lines(redis, pg)
    (base / "env").write_text("\n".join(lines) + "\n")
    print("\n".join(f"export {line}" for line in lines))


def cmd_env(base: Path) -> None:
    """Print export lines for both servers; fail if either is not running."""
    redis, pg = servers(base)
    if not (redis.running and pg.running):
        raise ServiceError(f"services in {base} are not running: run 'services.py start'")
    print("\n".join(f"export {line}" for line in env_lines(redis, pg)))


def cmd_stop(base: Path) -> None:
    """Stop both servers (if running) and remove ``base/env``."""
    redis, pg = servers(base)
    redis.stop()
    pg.stop()
    (base / "env").unlink(missing_ok=True)
    print(f"services in {base} stopped", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one subcommand; exit 1 with a message on failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("start", "start or reuse Redis and PostgreSQL; print export lines"),
        ("stop", "stop both servers"),
        ("env", "print export lines for the running servers"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    sub.add_parser(
        "ensure-binaries",
        help="install redis-server/postgresql if missing (root), TimescaleDB if its installer is there,"
        " and chromium/chromium-driver for the dashboard's browser tests",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure-binaries":
            ensure_binaries()
            print(ensure_timescaledb(), file=sys.stderr)
            print(ensure_browser(), file=sys.stderr)
        else:
            {"start": cmd_start, "stop": cmd_stop, "env": cmd_env}[args.command](args.dir.resolve())
    except ServiceError as exc:
        print(f"services.py {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
