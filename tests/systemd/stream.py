"""An MJPEG-over-HTTP camera on 127.0.0.1 that can stall: paused, it keeps the connection open and sends nothing.

That is how a hung camera looks to the agent (a read that blocks), unlike a file or a stopped
server, which end or refuse and so are seen at once.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

FRAME_INTERVAL_S = 0.04  # 25 fps


class StallingMjpegServer:
    """multipart/x-mixed-replace JPEG stream of small gray frames; pause() stalls it, resume() goes on."""

    def __init__(self, paused: bool = False) -> None:
        self._running = threading.Event()
        if not paused:
            self._running.set()
        self._stopping = threading.Event()
        jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
        self._part = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = False  # so stop() joins the handlers: nothing outlives the test
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        running, stopping, part = self._running, self._stopping, self._part

        class Handler(BaseHTTPRequestHandler):
            timeout = 2.0  # a client that stops reading cannot hold a handler thread forever

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not stopping.is_set():
                        if not running.wait(0.05):
                            continue  # stalled: the connection stays open, nothing is sent
                        self.wfile.write(part + b"\r\n")
                        stopping.wait(FRAME_INTERVAL_S)
                except OSError:
                    pass  # the client went away

        return Handler

    def start(self) -> StallingMjpegServer:
        self._thread.start()
        return self

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stopping.set()
        self._running.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)
