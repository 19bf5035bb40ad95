"""A TCP proxy in front of a PostgreSQL server that can lose one answer: armed, it
passes the next statement to the server, reads the server's answer up to ReadyForQuery
(by then the statement's transaction has committed) and closes the client's connection
instead of passing it on. The client sees its connection fail and cannot tell whether
its call landed, as when a network or a pooler drops a connection during a commit. The
torture's producer loses answers with it, and so do the tests."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class LostAnswer:
    """The proxy; `url` is the conninfo that goes through it."""

    def __init__(self, target: str) -> None:
        params = conninfo_to_dict(target)
        host = str(params.get("host") or "127.0.0.1")
        port = int(params.get("port") or 5432)
        self._target: Any = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = make_conninfo(
            target, host="127.0.0.1", port=self._listener.getsockname()[1], sslmode="disable"
        )
        self._armed = threading.Event()
        # the answer of a statement that succeeded (no ErrorResponse) was lost since the
        # proxy was last armed
        self.lost = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        """Lose the answer of the next statement the server completes on a connection
        already open (a new connection disarms the proxy: its start ends with a
        ReadyForQuery too)."""
        self.lost.clear()
        self._armed.set()

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._armed.clear()
            family = socket.AF_UNIX if isinstance(self._target, str) else socket.AF_INET
            server = socket.socket(family, socket.SOCK_STREAM)
            try:
                server.connect(self._target)
            except OSError:  # the server is down: so is this connection
                self._shut(client, server)
                continue
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        self._shut(source, sink)

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        """Pass the server's messages on; once armed (between statements, so at a message
        boundary), drop them up to a ReadyForQuery and close the client's connection
        there."""
        buffer = b""
        failed = False  # the dropped answer holds an ErrorResponse
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if not self._armed.is_set():
                    client.sendall(data)
                    continue
                buffer += data
                while len(buffer) >= 5:
                    kind, length = buffer[:1], struct.unpack("!I", buffer[1:5])[0]
                    if len(buffer) < 1 + length:
                        break
                    buffer = buffer[1 + length :]
                    failed = failed or kind == b"E"
                    if kind == b"Z":  # ReadyForQuery: the transaction has ended
                        self._armed.clear()
                        if not failed:
                            self.lost.set()
                        self._shut(server, client)
                        return
        self._shut(server, client)

    @staticmethod
    def _shut(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def lost_answer(target: str) -> Iterator[LostAnswer]:
    proxy = LostAnswer(target)
    try:
        yield proxy
    finally:
        proxy.close()
