"""A tiny asyncio TCP proxy for network-fault tests.

Put it between a worker and Redis or PostgreSQL and break the network on command::

    proxy = TcpProxy("127.0.0.1", redis_server.port)
    port = await proxy.start()          # point the worker at redis://127.0.0.1:{port}/0
    proxy.drop_all()                    # reset every open connection (both sides)
    proxy.pause()                       # hold new connections until resume()
    proxy.pause(refuse=True)            # close new connections at once
    proxy.blackhole()                   # nothing gets through, nothing is reset (a partition)
    proxy.resume()
    await proxy.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from streamtasks.aio import cancel_and_wait

BUFFER_SIZE = 64 * 1024


class _Link:
    """One proxied connection: the client side and the upstream side."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        """Reset both sides at once (no FIN handshake, pending data discarded)."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """Forward TCP connections from ``127.0.0.1:<port>`` to ``target_host:target_port``.

    ``drop_all()`` aborts the open connections; ``pause()`` holds new connections (they are
    accepted but not forwarded until ``resume()``), ``pause(refuse=True)`` closes them as
    soon as they arrive. Existing connections are not affected by pause/resume, but by
    ``blackhole()``: a network partition, where packets are dropped and nothing is reset; the
    open connections carry nothing (what was sent arrives after ``resume()``, as TCP resends
    it once the network heals) and new ones are held.
    """

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_port = listen_port
        self.connections_total = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = asyncio.Event()
        self._open.set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refuse = False

    @property
    def port(self) -> int:
        """The port the proxy listens on (after ``start()``)."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_connections(self) -> int:
        """How many proxied connections are open now."""
        return len(self._links)

    async def start(self) -> int:
        """Start listening on 127.0.0.1 and return the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)
        return self.port

    def pause(self, *, refuse: bool = False) -> None:
        """Hold new connections until ``resume()``, or close them at once if ``refuse``."""
        self._refuse = refuse
        self._open.clear()

    def blackhole(self) -> None:
        """Carry nothing on open connections and hold new ones until ``resume()``."""
        self._flowing.clear()
        self.pause()

    def resume(self) -> None:
        """Forward new (and held) connections again, and what the open ones hold."""
        self._refuse = False
        self._open.set()
        self._flowing.set()

    def drop_all(self) -> int:
        """Abort every open connection on both sides; return how many were dropped."""
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        return len(links)

    async def stop(self) -> None:
        """Stop listening, drop all connections and wait for the forwarding tasks."""
        if self._server is not None:
            self._server.close()
        self.drop_all()
        self._open.set()
        self._flowing.set()
        await cancel_and_wait(self._tasks)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # internals --------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        if self._refuse:
            writer.transport.abort()
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._open.wait()
            if self._refuse or link not in self._links:
                link.abort()
                return
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            link.abort()
            self._links.discard(link)
            return
        link.upstream = up_writer
        self._spawn(self._pump(reader, up_writer, link))
        self._spawn(self._pump(up_reader, writer, link))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        """Copy bytes from ``reader`` to ``writer``; close the whole link when either ends."""
        try:
            while data := await reader.read(BUFFER_SIZE):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                for side in (link.client, link.upstream):
                    if side is not None:
                        with contextlib.suppress(Exception):
                            side.close()
