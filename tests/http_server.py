"""A local HTTP server on 127.0.0.1 serving files from a folder, with Range support (resume tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


def _handler(root: Path, log: list[str], drops: dict[str, int]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = root / self.path.lstrip("/")
            log.append(f"{self.path} {self.headers.get('Range', '')}".strip())
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            if (rng := self.headers.get("Range", "")).startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            cut = drops.pop(self.path, None)  # drop this connection once, after `cut` bytes of the body
            if cut is not None:
                self.wfile.write(data[start:start + cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data[start:])

        def log_message(self, *args) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve(root: Path, drop_after: dict[str, int] | None = None) -> Iterator[tuple[str, list[str]]]:
    """Serve ``root``; yields the base URL and the list of requests seen (path + Range header).

    ``drop_after`` maps a URL path (``/file.bin``) to a byte count: the first response for it sends
    the full Content-Length but only that many body bytes, then closes the connection.
    """
    log: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(root, log, dict(drop_after or {})))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
