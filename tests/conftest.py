"""Shared fixtures: an isolated ZOO_HOME and a loopback HTTP server with injectable faults."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def zoo_env(tmp_path, monkeypatch):
    """A fresh cache and card folder; no mirror, online."""
    home = tmp_path / "zoo_home"
    (home / "cards").mkdir(parents=True)
    monkeypatch.setenv("ZOO_HOME", str(home))
    for var in ("ZOO_MIRROR", "ZOO_OFFLINE", "ZOO_CARDS", "ZOO_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    return home


class FileServer:
    """Serves bytes from memory on 127.0.0.1 with Range support and per-file faults.

    Faults (``server.faults[path]``): ``("status", code, n)`` answers ``code`` to the first n
    requests; ``("truncate", n)`` closes the first n responses half way; ``("stall", n, s)``
    stops sending half way for ``s`` seconds on the first n responses; ``("slow", bps)``
    throttles every response to about ``bps`` bytes per second.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, tuple] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                rng = self.headers.get("Range")
                with server.lock:
                    server.requests.append((path, rng))
                    count = sum(1 for p, _ in server.requests if p == path)
                fault = server.faults.get(path, ())
                if path not in server.files:
                    self.send_error(404)
                    return
                if fault and fault[0] == "status" and count <= fault[2]:
                    self.send_error(fault[1])
                    return
                body = server.files[path]
                start = 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Connection", "close")
                self.end_headers()
                half = len(chunk) // 2
                if fault and fault[0] == "truncate" and count <= fault[1]:
                    self.wfile.write(chunk[:half])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if fault and fault[0] == "stall" and count <= fault[1]:
                    self.wfile.write(chunk[:half])
                    self.wfile.flush()
                    time.sleep(fault[2])
                    return
                if fault and fault[0] == "slow":
                    step = max(1, fault[1] // 20)
                    for i in range(0, len(chunk), step):
                        try:
                            self.wfile.write(chunk[i:i + step])
                            self.wfile.flush()
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        time.sleep(0.05)
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, name: str, data: bytes) -> str:
        self.files[f"/{name}"] = data
        return f"{self.base}/{name}"

    def gets(self, name: str, ranged: bool | None = None) -> int:
        return sum(1 for p, r in self.requests if p == f"/{name}" and (ranged is None or bool(r) == ranged))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def write_card(folder, arch, tag, url, data: bytes, **fields) -> str:
    """Write a card for ``data`` served at ``url`` into ``folder``; returns ``arch.tag``."""
    values = {
        "arch": arch,
        "urls": [url],
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "format": "keras-legacy-h5",
        "input_size": [224, 224, 3],
        "preprocess": "caffe",
        "license": "test-only",
        "source": "tests",
    }
    values.update(fields)

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    text = f"[{arch}.{tag}]\n" + "".join(f"{k} = {fmt(v)}\n" for k, v in values.items())
    path = os.path.join(folder, f"{arch}.{tag}.toml")
    with open(path, "w") as f:
        f.write(text)
    return f"{arch}.{tag}"
