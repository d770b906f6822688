"""A stub OpenAI-compatible chat server for the remote-reasoner tests (model and node): each
URL path picks a failure mode."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def sse(chunk: dict) -> bytes:
    return f"data: {json.dumps(chunk)}\n\n".encode()


def delta(content: str | None = None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {} if content is None else {"content": content}}
    return sse({"id": "x", "object": "chat.completion.chunk", "choices": [choice | {
        "finish_reason": finish}]})  # fmt: skip


GOOD_STREAM = [
    delta(""),
    delta("<think>stub</think>"),
    delta('<answer>{"bbox": [84, 168, 420, 630]}</answer>'),
    delta(finish="stop"),
    b"data: [DONE]\n\n",
]


class StubServer:
    """An HTTP server on a free localhost port whose first path segment picks how it answers
    (base URL ``{url}/{mode}/v1``): ok, hang (reads the request, never answers), flaky (503
    `fail` times, then ok), status (HTTP 500 always), missing (404), garbage, html,
    truncated, error (an error event), nodelta (a whole message, not a delta), slow (a piece
    every 50 ms), dropped (two pieces of text, then the connection is cut mid-body). It
    records the requests' headers, how many each mode got, and when a client went away."""

    def __init__(self) -> None:
        self.headers: list[dict] = []
        self.counts: dict[str, int] = {}
        self.disconnected: dict[str, float] = {}
        self.fail = 2
        self.stop = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, "application/json", [b'{"data": []}'])

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                self.rfile.read(length)
                mode = self.path.strip("/").split("/")[0]
                stub.headers.append(dict(self.headers))
                stub.counts[mode] = stub.counts.get(mode, 0) + 1
                getattr(self, f"_{mode}")()

            def _send(self, status: int, kind: str, parts: list[bytes], pause: float = 0.0):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.end_headers()
                try:
                    for part in parts:
                        self.wfile.write(part)
                        self.wfile.flush()
                        if pause:
                            time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    stub.disconnected[self.path.strip("/").split("/")[0]] = time.monotonic()

            def _ok(self):
                self._send(200, "text/event-stream", GOOD_STREAM)

            def _hang(self):
                self.connection.settimeout(0.05)
                while not stub.stop.is_set():
                    try:
                        if self.connection.recv(1) == b"":
                            stub.disconnected["hang"] = time.monotonic()
                            return
                    except TimeoutError:
                        continue
                    except OSError:
                        stub.disconnected["hang"] = time.monotonic()
                        return

            def _flaky(self):
                if stub.counts["flaky"] <= stub.fail:
                    self._send(503, "application/json", [b'{"error": {"message": "loading"}}'])
                else:
                    self._ok()

            def _status(self):
                self._send(500, "text/plain", [b"Internal Server Error"])

            def _missing(self):
                self._send(404, "application/json", [b'{"detail": "Not Found"}'])

            def _garbage(self):
                self._send(200, "text/event-stream", [b"data: hello there\n\n"])

            def _nodelta(self):
                whole = {"choices": [{"index": 0, "message": {"content": "hi"}}]}
                self._send(200, "text/event-stream", [sse(whole)])

            def _html(self):
                self._send(200, "text/html", [b"<html><body>It works!</body></html>"])

            def _truncated(self):
                self._send(200, "text/event-stream", GOOD_STREAM[:2])

            def _error(self):
                error = {"error": {"message": "CUDA out of memory", "code": 500}}
                self._send(200, "text/event-stream", [GOOD_STREAM[0], sse(error)])

            def _slow(self):
                parts = [delta(f"w{i} ") for i in range(200)] + GOOD_STREAM[-2:]
                self._send(200, "text/event-stream", parts, pause=0.05)

            def _dropped(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", "100000")  # the body is never complete
                self.end_headers()
                self.wfile.write(GOOD_STREAM[0] + GOOD_STREAM[1])
                self.wfile.flush()
                time.sleep(0.2)  # the client has read the text before the cut
                self.connection.shutdown(socket.SHUT_RDWR)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
