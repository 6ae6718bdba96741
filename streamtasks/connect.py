"""Connecting to Redis: one node or a Redis Cluster, told apart at connect time.

``await connect(url)`` asks the node ``url`` names for ``INFO cluster``; when it says
``cluster_enabled:1`` the connection becomes redis-py's :class:`~redis.asyncio.cluster.RedisCluster`
(slot map read from that node, ``MOVED``/``ASK`` followed, the map refreshed after a failover).
A plain ``redis://`` / ``rediss://`` URL of any cluster node is enough; ``redis+cluster://``
(and ``rediss+cluster://``) forces cluster mode without asking. A ``redis+sentinel://`` (or
``rediss+sentinel://``) URL names Redis Sentinels and the service they monitor: the client
follows the master through failovers (:mod:`streamtasks.sentinel`, where the URL's syntax is).

Every part of streamtasks that opens a connection goes through :func:`connect`: the worker,
the producer, the ``AsyncProcessingSystem`` facade and every CLI command.

**Socket options.** Unless the caller or the URL says otherwise, a client has no socket
timeout and TCP keepalive that notices a dead peer within about half a minute
(:data:`CLIENT_DEFAULTS`). redis-py 8 made a 5 s socket timeout the default, which breaks two
things here: a blocking ``XREADGROUP`` of 5 s or more (``CONSUMER_BLOCK_MS``) fails as a
timeout, every time; and before Python 3.12 it runs each command's send through
``asyncio.wait_for``, which loses a task's cancellation when the send completes just as the
task is cancelled (a third of the cancels that land on a command, measured with redis-py
8.1 on Python 3.11): a stopping loop would run on. Connecting stays bounded (5 s).

The cluster client is typed as :class:`~redis.asyncio.Redis`: it offers the same command
methods, and the stages keep one client type. Where the two differ (scripts inside a
pipeline, multi-key reads), :func:`is_cluster` tells them apart.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

from .sentinel import is_sentinel_url, parse_sentinel_url, sentinel_client

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

#: TCP keepalive: first probe after 10 s idle, then every 5 s; 3 unanswered end the connection.
KEEPALIVE_OPTIONS = {
    option: value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}
#: What every client gets unless the caller's keywords or the URL's query say otherwise.
CLIENT_DEFAULTS: dict[str, Any] = {
    "socket_timeout": None,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "socket_keepalive_options": KEEPALIVE_OPTIONS,
}


def split_scheme(url: str) -> tuple[str, bool | None]:
    """``url`` with a ``+cluster`` scheme turned into the plain one, and True if it had one
    (None: ask the server)."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if sep and plain is not None:
        return f"{plain}://{rest}", True
    return url, None


async def cluster_enabled(redis: Redis) -> bool:
    """True if the node ``redis`` talks to runs in cluster mode (``INFO cluster``)."""
    try:
        info: dict[str, Any] = await redis.info("cluster")
    except rx.NoPermissionError:  # an ACL without INFO: treat as a single node
        return False
    return str(info.get("cluster_enabled", "0")) == "1"


def client_for(url: str, **kw: Any) -> Redis:
    """A client for ``url``, not connected yet (a Sentinel URL: the master's; a cluster URL:
    one node's). ``ValueError`` (or redis-py's parse errors) for a URL that cannot be used."""
    kw = {**CLIENT_DEFAULTS, **kw}
    if is_sentinel_url(url):
        return sentinel_client(url, **kw)
    return Redis.from_url(split_scheme(url)[0], **kw)


def check_url(url: str) -> None:
    """Raise (``ValueError`` and kin) if ``url`` cannot be parsed; no I/O."""
    from redis.asyncio.connection import parse_url

    if is_sentinel_url(url):
        parse_sentinel_url(url)
    else:
        parse_url(split_scheme(url)[0])


async def connect(url: str, **kw: Any) -> Redis:
    """A connected client for ``url``: a :class:`Redis`, a :class:`RedisCluster` when the
    node runs in cluster mode, or the master's client of a Sentinel URL. Raises redis-py's
    connection errors (the caller words them)."""
    kw = {**CLIENT_DEFAULTS, **kw}
    if is_sentinel_url(url):
        return await _connect_sentinel(url, kw)
    url, forced = split_scheme(url)
    redis = Redis.from_url(url, **kw)
    if forced is None:
        try:
            forced = await cluster_enabled(redis)
        except BaseException:
            await redis.aclose()
            raise
    if not forced:
        return redis
    await redis.aclose()
    cluster = RedisCluster.from_url(url, **kw)
    try:
        await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    return cast(Redis, cluster)


async def _connect_sentinel(url: str, kw: dict[str, Any]) -> Redis:
    """The master's client of a Sentinel URL, once the master answered a PING."""
    redis = sentinel_client(url, **kw)
    try:
        await redis.ping()
    except BaseException:
        await redis.aclose()
        raise
    return redis


def is_cluster(client: Any) -> bool:
    """True for a :class:`RedisCluster` or one of its pipelines."""
    return isinstance(client, RedisCluster | ClusterPipeline)


async def queue_script(script: Any, keys: list[Any], args: list[Any], client: Any) -> Any:
    """Run a registered script (``redis.register_script``) on ``client``, which may be a
    pipeline. A cluster pipeline refuses ``EVALSHA``, so there the script goes as ``EVAL``
    (its body; Redis caches it), which also survives a node that lost its script cache."""
    if isinstance(client, ClusterPipeline):
        return client.execute_command("EVAL", script.script, len(keys), *keys, *args)
    return await script(keys=keys, args=args, client=client)
