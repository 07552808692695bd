"""A real HTTP server on 127.0.0.1 for the data-layer tests.

Serves in-memory files with ``Range`` support, and can be told to misbehave per path:
``drop:K`` (send headers for the whole body, K bytes, then cut the connection),
an HTTP status (404, 500, …), ``wrong`` (same length, other bytes) or ``norange``
(answer 200 with the full body even to a Range request). Faults are queued per path and
consumed one per request; ``always`` faults repeat. It also plays the Cityscapes site:
``/login/`` form, session cookie, ``/file-handling/?packageID=N`` and ``/md5-sum/``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_COOKIE = "csrftoken=abc; sessionid=mpm-test-session"


class Request:
    def __init__(self, method: str, path: str, headers, body: bytes = b"") -> None:
        self.method, self.path, self.headers, self.body = method, path, dict(headers), body

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")

    def __repr__(self) -> str:
        return f"{self.method} {self.path} range={self.range}"


class FileServer:
    """State shared with the handler: files, fault queues, request log, login."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, deque] = defaultdict(deque)
        self.always: dict[str, object] = {}
        self.requests: list[Request] = []
        self.protected: set[str] = set()
        self.users: dict[str, str] = {}
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- control ---------------------------------------------------------------------
    def start(self) -> "FileServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def fault(self, path: str, *actions) -> None:
        self.faults[path].extend(actions)

    def requests_for(self, path: str, method: str = "GET") -> list[Request]:
        return [r for r in self.requests if r.path == path and r.method == method]

    def cityscapes(self, user: str, password: str, packages: dict[int, bytes]) -> None:
        """Serve Cityscapes packages behind a login."""
        self.users[user] = password
        for pid, data in packages.items():
            self.files[f"/file-handling/?packageID={pid}"] = data
            self.files[f"/md5-sum/?packageID={pid}"] = f"{hashlib.md5(data).hexdigest()}  package{pid}.zip\n".encode()
            self.protected.update({f"/file-handling/?packageID={pid}", f"/md5-sum/?packageID={pid}"})


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/nothing.zip"


def _make_handler(state: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _next_fault(self):
            with state.lock:
                queue = state.faults.get(self.path)
                if queue:
                    return queue.popleft()
                return state.always.get(self.path)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            state.requests.append(Request("POST", self.path, self.headers, body))
            if self.path != "/login/":
                self.send_error(405)
                return
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if form.get("submit") == "Login" and state.users.get(form.get("username")) == form.get("password") \
                    and form.get("username") in state.users:
                self.send_response(302)
                self.send_header("Location", "/")
                self.send_header("Set-Cookie", "sessionid=mpm-test-session; Path=/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            page = b"<html>login failed</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def _serve(self, head: bool) -> None:
            state.requests.append(Request("HEAD" if head else "GET", self.path, self.headers))
            if self.path == "/login/":
                self._send(200, b"<html>login form</html>", head)
                return
            if self.path in state.protected and "sessionid=mpm-test-session" not in self.headers.get("Cookie", ""):
                self.send_response(302)
                self.send_header("Location", "/login/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            fault = self._next_fault()
            if isinstance(fault, int):
                self.send_error(fault)
                return
            if fault == "wrong":
                data = bytes((b + 1) % 256 for b in data)
            start, total = 0, len(data)
            match = _RANGE.match(self.headers.get("Range", "")) if fault != "norange" else None
            if match:
                start = int(match.group(1))
                if start >= total:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if head:
                return
            if isinstance(fault, str) and fault.startswith("drop:"):
                keep = int(fault.split(":", 1)[1])
                self.wfile.write(body[:keep])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.wfile.write(body)

        def _send(self, status: int, body: bytes, head: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler
