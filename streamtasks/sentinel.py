"""Redis Sentinel: the ``redis+sentinel://`` URL, and a client that follows the master.

The URL names the sentinels, the service they monitor, and the database::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]
    rediss+sentinel://...                      (TLS to the sentinels and to the master)

* ``host[:port]``: one sentinel each (port 26379 unless given; ``[::1]:26379`` for IPv6);
  any one that answers is enough.
* ``service``: the name of ``sentinel monitor <service> ...`` (required); ``db``: 0 unless given.
* ``user:password@``: the *master's* credentials (``AUTH`` on the Redis that holds the data),
  as in a ``redis://`` URL. The sentinels get none unless the query gives
  ``sentinel_username`` / ``sentinel_password`` (sentinels with their own ``requirepass``
  or ACL users); both are redacted from logs like the URL's password.
* the other query options are redis-py's (``socket_timeout``, ``ssl_ca_certs``,
  ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ...) and apply to the master's
  connections; with ``rediss+sentinel://`` the ``ssl_*`` options apply to the sentinels too.

The client is redis-py's :meth:`Sentinel.master_for <redis.asyncio.sentinel.Sentinel.master_for>`:
every new connection asks a sentinel where the master is, so after a failover the next
command that reconnects reaches the new master (a connection to a master that was demoted is
dropped with a ``ConnectionError``, which every stage treats as an outage). While no master is
known (the failover is under way) connecting raises ``MasterNotFoundError``, a
``ConnectionError`` too: the worker waits it out like any outage, with one line when it starts
and one when it ends.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from attrs import field, frozen
from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

#: ``redis+sentinel`` and its TLS form, with the plain scheme their options are parsed as.
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
DEFAULT_SENTINEL_PORT = 26379
#: Query options for the sentinels themselves (not passed to the master).
SENTINEL_CREDENTIALS = ("sentinel_username", "sentinel_password")
#: Seconds a sentinel may take to answer "where is the master?" before the next one is asked.
SENTINEL_TIMEOUT_S = 2.0
#: Socket options a sentinel connection shares with the master's (its timeout is its own).
SHARED_SOCKET_OPTIONS = ("socket_connect_timeout", "socket_keepalive", "socket_keepalive_options")


@frozen
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    #: Keyword arguments of the master's connections (db, credentials, socket and TLS options).
    master: dict[str, Any] = field(repr=False)
    #: Keyword arguments of the sentinels' connections (their credentials, TLS).
    sentinel: dict[str, Any] = field(repr=False)


def is_sentinel_url(url: str) -> bool:
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL; ``ValueError`` saying what is wrong."""
    scheme, _, rest = url.partition("://")
    plain = SENTINEL_SCHEMES.get(scheme.lower())
    if plain is None:
        raise ValueError(f"not a Sentinel URL: use {' or '.join(s + '://' for s in SENTINEL_SCHEMES)}")
    netloc, path, query = _split(rest)
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = tuple(_host_port(h) for h in hosts.split(","))
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("a Sentinel URL names the monitored service: redis+sentinel://host:26379/mymaster")
    if len(parts) > 2:
        raise ValueError(f"a Sentinel URL's path is /service[/db], not {path!r}")
    options = parse_qsl(query, keep_blank_values=True)
    creds = {k: v for k, v in options if k in SENTINEL_CREDENTIALS}
    rest_query = urlencode([(k, v) for k, v in options if k not in SENTINEL_CREDENTIALS])
    db = parts[1] if len(parts) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"a Sentinel URL's database is a number, not {db!r}")
    auth = f"{userinfo}@" if userinfo else ""
    master: dict[str, Any] = dict(
        parse_url(f"{plain}://{auth}sentinel/{db}" + (f"?{rest_query}" if rest_query else ""))
    )
    master.pop("host", None)
    master.pop("port", None)
    tls = master.pop("connection_class", None) is not None
    sentinel: dict[str, Any] = {k.removeprefix("sentinel_"): v for k, v in creds.items() if v}
    if tls:
        master["ssl"] = True  # SentinelConnectionPool picks its TLS connection class for it
        sentinel.update({k: v for k, v in master.items() if k.startswith("ssl")})
    return SentinelTarget(sentinels, parts[0], master, sentinel)


def _split(rest: str) -> tuple[str, str, str]:
    """``netloc``, ``path`` and ``query`` of what follows ``scheme://``."""
    head, _, query = rest.partition("?")
    netloc, slash, path = head.partition("/")
    if not netloc.rpartition("@")[2]:
        raise ValueError("a Sentinel URL names at least one sentinel: redis+sentinel://host:26379/mymaster")
    return netloc, slash + path, query


def _host_port(text: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"empty sentinel host in {text!r}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel {text!r} has an invalid port")
    return host, int(port_text)


class SentinelRedis(Redis):
    """The master's client; closing it also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        closing_pool = close_connection_pool or (
            close_connection_pool is None and self.auto_close_connection_pool
        )
        if closing_pool:
            manager: Sentinel = self.connection_pool.sentinel_manager  # type: ignore[attr-defined]
            await manager.aclose()


def sentinel_client(url: str, **kw: Any) -> Redis:
    """A client of the master the sentinels of ``url`` name (not connected yet); ``kw``: the
    master connections' options (the URL's query wins over them, as for ``from_url``)."""
    target = parse_sentinel_url(url)
    master = {**kw, **target.master}
    sentinel_kw = {k: master[k] for k in SHARED_SOCKET_OPTIONS if k in master}
    sentinel_kw.update(socket_timeout=SENTINEL_TIMEOUT_S, **target.sentinel)
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_kw)
    client: Redis = sentinel.master_for(target.service, redis_class=SentinelRedis, **master)
    return client
