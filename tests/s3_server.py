"""A real S3-compatible server on the loopback address for the object-storage tests.

:class:`S3Server` runs moto's standalone server (``moto[server]``, the server s3fs and Dask test
against) as a child process on a free port of 127.0.0.1 and creates buckets in it;
:class:`S3Proxy` sits in front of it, counting the requests and bytes that pass, and, when told
to, failing some requests the way networks and busy stores do: the connection dropped as a
request arrives, or a ``503 SlowDown`` answer. Both stop with the test that started them.

The environment the tests give the service (and every worker process it starts) is
:meth:`S3Server.environment`: test credentials, a region, the endpoint in ``AWS_ENDPOINT_URL``
and ``AWS_EC2_METADATA_DISABLED=true`` so that no client ever asks an instance-metadata address.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACCESS_KEY = "disco-test-key"
SECRET_KEY = "disco-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None
                  ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it "
                               "listened")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class S3Server:
    """moto's S3 server in a child process on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        env = {**os.environ, **self.environment(self.endpoint)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @staticmethod
    def environment(endpoint: str) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem(self, endpoint: str | None = None) -> Any:
        """A pyarrow filesystem on the server that may create buckets (the service never does)."""
        import pyarrow.fs as pafs

        host = (endpoint or self.endpoint).split("://", 1)[1]
        return pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION,
                                 endpoint_override=host, scheme="http",
                                 allow_bucket_creation=True, allow_bucket_deletion=True)

    def create_bucket(self, name: str) -> None:
        self.filesystem().create_dir(name)

    def objects(self, prefix: str) -> dict[str, int]:
        """``{path: size}`` of every object under ``bucket/prefix``."""
        import pyarrow.fs as pafs

        infos = self.filesystem().get_file_info(pafs.FileSelector(prefix, recursive=True,
                                                                  allow_not_found=True))
        return {i.path: int(i.size or 0) for i in infos if i.type == pafs.FileType.File}

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_HEAD_END = b"\r\n\r\n"
_LENGTH_RE = re.compile(rb"^content-length:\s*(\d+)\s*$", re.I | re.M)
_CHUNKED_RE = re.compile(rb"^transfer-encoding:\s*chunked\s*$", re.I | re.M)
_METHOD_RE = re.compile(rb"^([A-Z]+) ([^ ?]*)")

SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
             b"Connection: close\r\nContent-Length: 111\r\n\r\n"
             b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce your request "
             b"rate.</Message></Error>  ")


@dataclass
class ProxyStats:
    connections: int = 0
    requests: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    """Bytes clients sent (requests: headers and uploaded data)."""
    bytes_down: int = 0
    """Bytes the server sent back (responses: headers and downloaded data)."""
    faults: int = 0
    log: list[tuple[str, str]] = field(default_factory=list)
    """``(method, path)`` of every request, in the order they arrived."""


class S3Proxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that counts and (optionally) fails.

    ``fault(n, method, path)`` decides, for the n-th request (from 1), whether to fail it: return
    ``"drop"`` (close the connection as the request arrives), ``"503"`` (answer SlowDown) or
    None. Requests are found by parsing the client's stream (request line, Content-Length or
    chunked bodies); the bytes pass unchanged.
    """

    def __init__(self, upstream_port: int,
                 fault: Callable[[int, str, str], str | None] | None = None) -> None:
        self.upstream = upstream_port
        self.fault = fault
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Proxy:
        t = threading.Thread(target=self._accept, name="s3-proxy", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            _close(c)
        for t in self._threads:
            t.join(timeout=5)

    def reset(self) -> None:
        with self._lock:
            self.stats = ProxyStats()

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- plumbing ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _addr = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self.stats.connections += 1
                self._conns.update((client, server))
            up = threading.Thread(target=self._upstream, args=(client, server), daemon=True)
            down = threading.Thread(target=self._downstream, args=(server, client), daemon=True)
            up.start()
            down.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [up, down]

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._conns.discard(s)
        for s in socks:
            _close(s)

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = server.recv(1 << 16)
                if not data:
                    break
                with self._lock:
                    self.stats.bytes_down += len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(server, client)

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        buf = b""
        body_left = 0
        chunked = False
        try:
            while True:
                data = client.recv(1 << 16)
                if not data:
                    break
                with self._lock:
                    self.stats.bytes_up += len(data)
                buf += data
                out = b""
                while buf:
                    if body_left > 0:
                        take = min(body_left, len(buf))
                        out += buf[:take]
                        buf = buf[take:]
                        body_left -= take
                        continue
                    if chunked:
                        consumed, done = _chunked_progress(buf)
                        out += buf[:consumed]
                        buf = buf[consumed:]
                        if done:
                            chunked = False
                            continue
                        break
                    end = buf.find(_HEAD_END)
                    if end < 0:
                        break
                    head = buf[:end + 4]
                    buf = buf[end + 4:]
                    method = _METHOD_RE.match(head)
                    name = method.group(1).decode() if method else "?"
                    target = method.group(2).decode("latin-1") if method else "?"
                    with self._lock:
                        self.stats.requests += 1
                        n = self.stats.requests
                        self.stats.by_method[name] = self.stats.by_method.get(name, 0) + 1
                        self.stats.log.append((name, target))
                    action = self.fault(n, name, target) if self.fault is not None else None
                    if action is not None:
                        with self._lock:
                            self.stats.faults += 1
                        if out:
                            server.sendall(out)
                        if action == "503":
                            client.sendall(SLOW_DOWN)
                        return  # "drop", or after the 503: the connection ends here
                    length = _LENGTH_RE.search(head)
                    body_left = int(length.group(1)) if length else 0
                    chunked = bool(_CHUNKED_RE.search(head)) and not length
                    out += head
                if out:
                    server.sendall(out)
        except OSError:
            pass
        finally:
            self._forget(client, server)


def _chunked_progress(buf: bytes) -> tuple[int, bool]:
    """How many bytes of a chunked body ``buf`` holds whole chunks of, and whether the last
    (zero) chunk and its trailer are among them."""
    pos = 0
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return pos, False
        size = int(buf[pos:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            trailer = buf.find(b"\r\n\r\n", line_end)
            if trailer < 0:
                return pos, False
            return trailer + 4, True
        need = line_end + 2 + size + 2
        if len(buf) < need:
            return pos, False
        pos = need


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
