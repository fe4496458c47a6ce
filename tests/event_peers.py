"""Peers of the events and routing tests: an HTTP server that receives webhooks, and dcmtk's storescp as the
destination of auto-forwards."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.node import free_port, port_accepts, wait_until
from tests.peers import dcmtk_env, dcmtk_tool


class Receiver:
    """An HTTP server in a thread that records every POST; ``failures`` first answers get 500."""

    def __init__(self, failures: int = 0) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.failures = failures
        self.down = False  # answer 503 to everything while set
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.down:
                    status = 503
                elif receiver.failures > 0:
                    receiver.failures -= 1
                    status = 500
                else:
                    status = 200
                    receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(body) for headers, body in list(self.posts) if headers.get("x-pacs-event") == kind]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class StoreScp:
    """dcmtk's storescp as the forward destination (on a port chosen in advance, so it can start late)."""

    def __init__(self, workdir: Path, port: int | None = None, ae_title: str = "DEST") -> None:
        self.ae_title = ae_title
        self.port = port or free_port()
        self.out = workdir / f"received-{ae_title}-{self.port}"
        self.out.mkdir(parents=True)
        self.process = subprocess.Popen([dcmtk_tool("storescp"), "+xa", "-aet", ae_title, "-od", str(self.out),
                                         str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        env=dcmtk_env())
        wait_until(lambda: port_accepts(self.port), 10, "storescp")

    def received(self) -> set[str]:
        return {path.name.split(".", 1)[1] for path in self.out.iterdir()}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
