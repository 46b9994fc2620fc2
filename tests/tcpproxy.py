"""A TCP proxy the fault tests (and bench/fault.py) put between the bot and PostgreSQL or Redis.

    proxy = TcpProxy("127.0.0.1", 6379); await proxy.start()   # then point the bot at proxy.port
    proxy.cut()      # every open connection reset, new ones refused: the service is gone
    proxy.freeze()   # connections stay open and new ones are accepted, but no byte moves: the service hangs
    proxy.restore()  # traffic flows again (a frozen connection resumes where it stopped)
    proxy.restore(held=True)  # new connections flow; those open when it froze stay held (a route that came
                              # back for new connections while an old one's bytes are still in flight)
    proxy.release()  # the held ones flow again too

It runs in the caller's event loop and forwards bytes unchanged; nothing here knows either protocol.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.mode = "open"
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pairs: dict[tuple[asyncio.StreamWriter, asyncio.StreamWriter], asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()
        self.connections = 0  # accepted while open (for tests that want to see traffic)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url_for(self, url: str) -> str:
        """The same service URL, pointed at this proxy: redis://127.0.0.1:6379/0 → redis://127.0.0.1:<port>/0."""
        scheme, rest = url.split("://", 1)
        userinfo, _, hostpart = rest.rpartition("@")
        tail = hostpart.split("/", 1)[1] if "/" in hostpart else ""
        prefix = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{prefix}{self.host}:{self.port}" + (f"/{tail}" if tail or "/" in hostpart else "")

    def cut(self) -> None:
        self.mode = "cut"
        self._flowing.set()
        self.release()  # held pumps wake, see the cut and end
        for client, upstream in list(self._pairs):
            _abort(client)
            _abort(upstream)
        self._pairs.clear()

    def freeze(self) -> None:
        self.mode = "frozen"
        self._flowing.clear()
        for flowing in self._pairs.values():
            flowing.clear()

    def restore(self, held: bool = False) -> None:
        self.mode = "open"
        self._flowing.set()
        if not held:
            self.release()

    def release(self) -> None:
        for flowing in self._pairs.values():
            flowing.set()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(writer)
            return
        if self.mode == "cut":
            _abort(writer)
            _abort(up_writer)
            return
        self.connections += 1
        pair = (writer, up_writer)
        flowing = asyncio.Event()
        if self._flowing.is_set():
            flowing.set()
        self._pairs[pair] = flowing
        pumps = [asyncio.create_task(self._pump(reader, up_writer, flowing)),
                 asyncio.create_task(self._pump(up_reader, writer, flowing))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            self._pairs.pop(pair, None)
            for w in pair:
                with contextlib.suppress(Exception):
                    w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await flowing.wait()  # frozen: hold the bytes, keep the socket open
                if self.mode == "cut":
                    return
                writer.write(data)
                await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (as a crashed host or a dropped route looks to the client), not a polite FIN."""
    transport = writer.transport
    with contextlib.suppress(Exception):
        transport.abort()
