"""The one HTTP server behind the fleet's two web endpoints: the dashboard's files and the exporter's /metrics.

Not http.server's ThreadingHTTPServer: it gives every connection a thread before the client has
said a word and waits on it with no time limit. 300 half-sent requests held 300 threads for over a
minute; once the file limit was reached, accept() failed on every pass of a loop that spun on it.

Here one thread (the loop) accepts connections and reads their request heads without blocking, each
within `timeout_s` of being accepted. Only a complete head reaches one of a few worker threads, which
answer it with the same timeout on the socket, then close it (HTTP/1.0: one request per connection).
Open connections are capped: at the cap, the one that has waited longest for its head is closed (a
real client sends its head in one packet as it connects, so the oldest is the likeliest to be
stalled), and a newcomer is refused with a 503 only when every open one is being answered. When
accept() fails for want of file descriptors, the loop stops listening for a moment instead of spinning.

Both apps answer GET and HEAD alone, so no request body is read.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

__all__ = ["DEFAULT_LIMITS", "LimitedHTTPServer", "Limits"]

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how soon the loop sees stop()
_PAUSE_S = 0.5  # listening paused this long when the process is out of file descriptors
_WARN_EVERY_S = 60.0  # one log line a minute at most while out of file descriptors
_ACCEPTS_PER_PASS = 64  # so a flood of connections cannot starve the heads already coming in
_RECV_BYTES = 8192
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
_TOO_LARGE = b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    """max_connections: sockets open at once (heads coming in and requests being answered); workers:
    threads answering; timeout_s: for a client to send its whole request head, and for each read or
    write while it is answered; max_head_bytes: request line and headers together."""

    max_connections: int = 128
    workers: int = 4
    timeout_s: float = 10.0
    max_head_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.workers < 1 or self.timeout_s <= 0 or self.max_head_bytes < 64:
            raise ValueError(f"HTTP server limits out of range: {self}")


DEFAULT_LIMITS = Limits()


@dataclass
class _Pending:
    """A connection whose request head is still coming."""

    sock: socket.socket
    address: tuple[str, int]
    deadline: float
    head: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class _Request:
    """A complete request head and the socket to answer on: what a handler gets as its `request`."""

    sock: socket.socket
    address: tuple[str, int]
    head: bytes


class _SocketWriter(io.BufferedIOBase):
    """wfile: every write is a sendall, bounded in total by the socket's timeout (a client that stops reading)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._sock.sendall(data)
        return len(data)


class _FromHead:
    """Mixed in before the app's handler: it reads the head the loop received, not the socket."""

    request: _Request

    def setup(self) -> None:
        self.connection = self.request.sock
        self.rfile = io.BytesIO(self.request.head)
        self.wfile = _SocketWriter(self.request.sock)

    def finish(self) -> None:
        self.wfile.close()
        self.rfile.close()


class LimitedHTTPServer:
    """Serve `handler` (a BaseHTTPRequestHandler for GET/HEAD) on (host, port); port 0 picks a free one.

    OSError (a port in use, an unknown host) when it cannot listen. serve_forever() runs the loop in
    the calling thread; start() runs it on a background thread; stop() ends either.
    """

    def __init__(
        self, host: str, port: int, handler: type[BaseHTTPRequestHandler], limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.limits = limits
        self._handler = type(handler.__name__, (_FromHead, handler), {"protocol_version": "HTTP/1.0"})
        self._socket = _listening(host, port)
        self._pending: dict[socket.socket, _Pending] = {}  # the loop's alone; in accept order, the oldest first
        self._answering = 0  # connections handed to the workers and not closed yet (the workers count down)
        self._lock = threading.Lock()
        self._starved_warned: float | None = None  # when running out of file descriptors was last logged
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> LimitedHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="fleet-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.limits.timeout_s + 5.0)
        self._socket.close()

    def serve_forever(self) -> None:
        workers = [
            threading.Thread(target=self._work, name=f"fleet-http-{n}", daemon=True) for n in range(self.limits.workers)
        ]
        for worker in workers:
            worker.start()
        selector = selectors.DefaultSelector()
        selector.register(self._socket, selectors.EVENT_READ)
        paused_until: float | None = None
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if paused_until is not None and now >= paused_until:
                    selector.register(self._socket, selectors.EVENT_READ)
                    paused_until = None
                oldest = next(iter(self._pending.values()), None)
                wait = _POLL_S if oldest is None else min(_POLL_S, oldest.deadline - now)
                for key, _ in selector.select(max(wait, 0.0)):
                    if key.fileobj is self._socket:
                        if not self._accept(selector):
                            selector.unregister(self._socket)
                            paused_until = time.monotonic() + _PAUSE_S
                    elif key.data.sock in self._pending:  # not closed by an accept earlier in this pass
                        self._read(selector, key.data)
                self._expire(selector, time.monotonic())
        finally:
            for pending in list(self._pending.values()):
                self._drop(selector, pending)
            selector.close()
            for _ in workers:
                self._queue.put(None)
            until = time.monotonic() + self.limits.timeout_s + 1.0  # a worker's last write may take that long
            for worker in workers:
                worker.join(max(until - time.monotonic(), 0.0))

    def _open(self) -> int:
        with self._lock:
            answering = self._answering
        return len(self._pending) + answering

    def _accept(self, selector: selectors.BaseSelector) -> bool:
        """Take what connections wait; False when the process is out of file descriptors."""
        for _ in range(_ACCEPTS_PER_PASS):
            try:
                sock, address = self._socket.accept()
            except BlockingIOError:
                return True
            except OSError as error:
                if error.errno not in _OUT_OF_DESCRIPTORS:
                    continue  # the client left before it was taken (ECONNABORTED)
                self._warn_starved(error)
                if self._evict_oldest(selector):
                    continue  # its descriptor is free now: the newcomer takes it
                return False
            if self._open() >= self.limits.max_connections and not self._evict_oldest(selector):
                _refuse(sock, _BUSY)
                continue
            sock.setblocking(False)
            pending = _Pending(sock, address, time.monotonic() + self.limits.timeout_s)
            self._pending[sock] = pending
            selector.register(sock, selectors.EVENT_READ, pending)
        return True

    def _warn_starved(self, error: OSError) -> None:
        now = time.monotonic()
        if self._starved_warned is None or now - self._starved_warned >= _WARN_EVERY_S:
            self._starved_warned = now
            log.warning(
                "cannot accept connections: %s; closing those that have waited longest for their request "
                "(raise the limit with ulimit -n or LimitNOFILE=)",
                error.strerror,
            )

    def _evict_oldest(self, selector: selectors.BaseSelector) -> bool:
        oldest = next(iter(self._pending.values()), None)
        if oldest is None:
            return False
        self._drop(selector, oldest)
        return True

    def _read(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        try:
            data = pending.sock.recv(_RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(selector, pending)  # closed, or reset, before its request was whole
            return
        pending.head += data
        if b"\r\n\r\n" not in pending.head and b"\n\n" not in pending.head:
            if len(pending.head) > self.limits.max_head_bytes:
                self._drop(selector, pending, _TOO_LARGE)
            return
        selector.unregister(pending.sock)
        del self._pending[pending.sock]
        with self._lock:
            self._answering += 1
        self._queue.put(_Request(pending.sock, pending.address, bytes(pending.head)))

    def _expire(self, selector: selectors.BaseSelector, now: float) -> None:
        # Every connection gets the same time, so those past their deadline are at the front.
        while (oldest := next(iter(self._pending.values()), None)) is not None and oldest.deadline <= now:
            self._drop(selector, oldest)

    def _drop(self, selector: selectors.BaseSelector, pending: _Pending, answer: bytes = b"") -> None:
        selector.unregister(pending.sock)
        del self._pending[pending.sock]
        _refuse(pending.sock, answer)

    def _work(self) -> None:
        while (request := self._queue.get()) is not None:
            try:
                request.sock.setblocking(True)
                request.sock.settimeout(self.limits.timeout_s)
                self._handler(request, request.address, self)  # type: ignore[arg-type]
            except OSError as error:  # the client left or stopped reading: nobody to answer
                log.debug("answering %s: %s", request.address[0], error)
            except Exception:  # a bug in the app: its traceback, and the server goes on
                log.exception("answering %s failed", request.address[0])
            finally:
                _close(request.sock)
                with self._lock:
                    self._answering -= 1


def _listening(host: str, port: int) -> socket.socket:
    """A non-blocking socket listening on (host, port), IPv4 or IPv6 as the host says. Not socket.create_server:
    its error adds the address to strerror, which the commands print after their own "cannot listen on ADDRESS"."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server: a restart rebinds at once
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _refuse(sock: socket.socket, answer: bytes) -> None:
    """Say why in one non-blocking send if there is room for it, then close."""
    if answer:
        try:
            sock.setblocking(False)
            sock.send(answer)
        except OSError:
            pass
    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)  # the client reads what was sent, then EOF
    sock.close()
