"""A tiny HTTP server on loopback for webhook and audio_url tests: records requests, fails the
first N webhook deliveries, serves a file, and redirects where told."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    fail_first: int = 0
    serve_file: Path | None = None
    redirect_to: str | None = None
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                owner.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = 500 if len(owner.received) <= owner.fail_first else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                if self.path.startswith("/redirect") and owner.redirect_to:
                    self.send_response(302)
                    self.send_header("location", owner.redirect_to)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if self.path.startswith("/audio") and owner.serve_file is not None:
                    data = owner.serve_file.read_bytes()
                    self.send_response(200)
                    self.send_header("content-type", "audio/flac")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
