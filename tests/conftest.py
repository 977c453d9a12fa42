"""Shared fixtures: an isolated ZOO_HOME and a loopback HTTP server with injectable faults."""

from __future__ import annotations

import atexit
import hashlib
import ipaddress
import os
import shutil
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# Before anything imports TensorFlow or Keras: quiet logs, the CPU only (a GPU with TF32 would break
# the 1e-5 checks), and Keras' and matplotlib's config folders inside one temporary folder, so the
# suite writes nothing into the user's HOME.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
_SESSION_DIR = tempfile.mkdtemp(prefix="zoo-tests-")
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)
# HOME too: libraries the tests reach write there on their own (ipykernel's ~/.ipython, onnxruntime's
# ~/.cache/Microsoft, rustup's settings when pip builds the wheel); subprocesses inherit it.
os.environ["HOME"] = os.path.join(_SESSION_DIR, "home")
os.makedirs(os.environ["HOME"])
for _var, _sub in (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share")):
    os.environ[_var] = os.path.join(os.environ["HOME"], _sub)
os.environ["KERAS_HOME"] = os.path.join(_SESSION_DIR, "keras")
os.environ["MPLCONFIGDIR"] = os.path.join(_SESSION_DIR, "matplotlib")
for _var in [v for v in os.environ if v.startswith("ZOO_")]:  # module-scoped fixtures see these
    del os.environ[_var]
os.environ["ZOO_HOME"] = os.path.join(_SESSION_DIR, "zoo_home")

try:  # hypothesis: the same examples every run, no wall-clock deadline on 2 loaded cores
    from hypothesis import settings
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(os.path.join(_SESSION_DIR, "hypothesis"))  # not ./.hypothesis
    settings.register_profile("zoo", derandomize=True, deadline=None, print_blob=True, database=None)
    settings.load_profile("zoo")
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths, abstract sockets
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded(real):
    def connect(sock, address):
        if not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may only connect to 127.0.0.1, not {address!r}")
        return real(sock, address)

    return connect


socket.socket.connect = _guarded(_real_connect)
socket.socket.connect_ex = _guarded(_real_connect_ex)


@pytest.fixture(autouse=True)
def _isolated_zoo(tmp_path, monkeypatch):
    """Every test gets its own empty ZOO_HOME and none of the user's zoo settings."""
    for var in [v for v in os.environ if v.startswith("ZOO_")]:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "zoo_home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    return home


@pytest.fixture
def zoo_env(_isolated_zoo):
    """The test's ZOO_HOME with its cards folder made; no mirror, online."""
    (_isolated_zoo / "cards").mkdir(parents=True, exist_ok=True)
    return _isolated_zoo


class FileServer:
    """Serves bytes from memory on 127.0.0.1 with Range support and per-file faults.

    Faults (``server.faults[path]``): ``("status", code, n)`` answers ``code`` to the first n
    requests; ``("truncate", n)`` closes the first n responses half way; ``("stall", n, s)``
    stops sending half way for ``s`` seconds on the first n responses; ``("slow", bps)``
    throttles every response to about ``bps`` bytes per second; ``("trickle", s)`` sends one byte
    every ``s`` seconds; ``("endless",)`` answers 200 without a Content-Length and sends random
    bytes until the client hangs up; ``("oversize", k)`` sends the body k times over, with a
    matching Content-Length; ``("badrange",)`` answers a Range request with a 206 whose
    Content-Range (and body) start at byte 0. Endless and trickling answers stop after 30 s.
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
                if fault and fault[0] == "endless":
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self._stream(lambda: os.urandom(1 << 16), 0.0)
                    return
                if fault and fault[0] == "oversize":
                    body = body * fault[1]
                start = 0
                if rng and fault and fault[0] == "badrange":
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
                    rng = None
                elif rng:
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
                if fault and fault[0] == "trickle":
                    pending = iter(chunk)
                    self._stream(lambda: bytes([next(pending, 0)]), fault[1], len(chunk))
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

            def _stream(self, piece, pause: float, total: int | None = None):
                """Write ``piece()`` every ``pause`` s until the client hangs up, ``total`` bytes or 30 s."""
                sent, stop = 0, time.monotonic() + 30
                while time.monotonic() < stop and (total is None or sent < total):
                    data = piece()
                    try:
                        self.wfile.write(data)
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError, OSError):
                        return
                    sent += len(data)
                    if pause:
                        time.sleep(pause)
                self.close_connection = True

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
    from zoo.hub.cards import card_from_table

    path = os.path.join(folder, f"{arch}.{tag}.toml")
    text = card_from_table(arch, tag, values, path).to_toml()  # the zoo's one card writer
    with open(path, "w") as f:
        f.write(text)
    return f"{arch}.{tag}"


def served_card(zoo_env, server, name: str, data: bytes, **fields):
    """Serve ``data`` as ``name`` on the loopback server and return the card of ``resnet50.<stem>`` for it."""
    from zoo.hub.cards import get_card

    url = server.add(name, data)
    return get_card(write_card(zoo_env / "cards", "resnet50", name.split(".")[0], url, data, **fields))
