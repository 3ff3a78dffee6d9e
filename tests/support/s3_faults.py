"""A fault-injecting HTTP proxy in front of the test S3 server: a store that throttles, fails or drops.

Clients pointed at `FaultProxy.url` (AWS_ENDPOINT_URL) reach moto through it unchanged, except the
reads (GET/HEAD) of object keys given a fault: those are answered with the fault a set number of times,
or every time, and then forwarded again. Each request of a key counts, so a test can see how often the
platform asked. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

RANGE_START = re.compile(r"bytes=(\d+)-")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Fault(Enum):
    SLOW_DOWN = (503, "SlowDown", "Please reduce your request rate.")
    UNAVAILABLE = (503, "ServiceUnavailable", "Service is unable to handle request.")
    INTERNAL = (500, "InternalError", "We encountered an internal error. Please try again.")
    DENIED = (403, "AccessDenied", "Access Denied")
    RESET = (0, "", "")  # the connection is reset (TCP RST) before any answer


@dataclass
class _Rule:
    fault: Fault
    left: int | None  # None: every time
    from_byte: int  # only ranged GETs starting here or later (0: every read, HEAD included)


class FaultProxy:
    """Forwards to `upstream`; `fail(key, fault, times)` makes reads of `bucket/key` fail."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._rules: dict[str, _Rule] = {}
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # "bucket/key" -> reads seen (faulted or forwarded)
        self.faulted: Counter[str] = Counter()  # "bucket/key" -> reads answered with a fault
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, object_path: str, fault: Fault, times: int | None = None, from_byte: int = 0) -> None:
        """Answer the next `times` reads of `bucket/key` (every read when None) with `fault`; with
        `from_byte`, only reads of a byte range starting there or later (a block past the header)."""
        with self._lock:
            self._rules[object_path.strip("/")] = _Rule(fault, times, from_byte)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, method: str, path: str, byte_range: str | None) -> Fault | None:
        if method not in ("GET", "HEAD"):
            return None
        key = unquote(urlsplit(path).path).strip("/")
        start = RANGE_START.match(byte_range or "")
        offset = int(start.group(1)) if start and method == "GET" else None
        with self._lock:
            self.requests[key] += 1
            rule = self._rules.get(key)
            if rule is None or rule.left == 0:
                return None
            if rule.from_byte and (offset is None or offset < rule.from_byte):
                return None
            if rule.left is not None:
                rule.left -= 1
            self.faulted[key] += 1
            return rule.fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet test output
                return

            def _serve(self) -> None:
                fault = proxy._take(self.command, self.path, self.headers.get("Range"))
                body = self._request_body()
                if fault is Fault.RESET:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None:
                    self._answer_fault(fault)
                    return
                self._forward(body)

            def _request_body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline().strip():  # trailers, then the blank line
                        pass
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _answer_fault(self, fault: Fault) -> None:
                status, code, message = fault.value
                payload = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _forward(self, body: bytes | None) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    length = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _serve

        return Handler
