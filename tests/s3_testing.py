"""Test support for S3 downloads: a real moto server on loopback, uploads, and a fault-injecting proxy."""

from __future__ import annotations

import collections
import functools
import http.client
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config

# Dummy credentials for the uploader only: moto accepts any signature, and the client under
# test must stay anonymous (UNSIGNED), as it is against the real INDI bucket.
_ADMIN_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with code {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {url} did not answer within {timeout_s} s: {log.read_text()[-2000:]}")


@contextmanager
def moto_server() -> Iterator[str]:
    """Run a real moto S3 server in a subprocess on 127.0.0.1; yield its endpoint URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="moto-") as tmp:
        log = Path(tmp) / "moto.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            _wait_until_up(url, proc, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def reset_server(endpoint: str) -> None:
    """Forget every bucket and object on a moto server (between tests)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


@functools.lru_cache(maxsize=8)
def _admin_client(endpoint: str):
    # Cached: creating a boto3 client costs ~0.2 s, and clients are thread-safe.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        # No flexible checksum (CRC32) on upload: objects in the INDI bucket predate them, so
        # the client under test must verify bodies by size and the md5 ETag alone.
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"),
        **_ADMIN_CREDENTIALS,
    )


def _ensure_bucket(client, bucket: str) -> None:
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass


def put_object(endpoint: str, key: str, body: bytes, bucket: str = "fcp-indi", public: bool = True) -> None:
    """Upload one object (creating the bucket); ``public=False`` makes anonymous GET/HEAD answer 403."""
    client = _admin_client(endpoint)
    _ensure_bucket(client, bucket)
    extra = {"ACL": "public-read"} if public else {}
    client.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def upload_tree(endpoint: str, root: Path, bucket: str = "fcp-indi") -> int:
    """Upload every file under ``root`` as a public-read object keyed by its posix relative path."""
    client = _admin_client(endpoint)
    _ensure_bucket(client, bucket)
    count = 0
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            key = path.relative_to(root).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ACL="public-read")
            count += 1
    return count


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>FAULTPROXY</RequestId></Error>"
)


class FaultProxy:
    """A real HTTP proxy on 127.0.0.1 that forwards to ``upstream`` and injects faults at random.

    Faults (drawn per request from ``random.Random(seed)``): close the socket without answering
    (``p_drop``); send the full headers but only part of the body, then close (``p_truncate``);
    answer 503 SlowDown with an S3 XML error body (``p_503``); flip one byte of an object's body,
    keeping its length and ETag (``p_corrupt``, object GETs only). ``only_get`` limits faults to
    object GETs (listings and HEADs pass). ``chunk_delay_s`` sleeps between 64 KiB body chunks
    (a slow link, so that a client can be killed mid-file). ``requests`` counts
    ``(method, key)`` pairs; a listing's key is ``""``.
    """

    def __init__(self, upstream: str, *, seed: int, p_drop: float = 0.1, p_truncate: float = 0.1,
                 p_503: float = 0.1, only_get: bool = False, chunk_delay_s: float = 0.0,
                 p_corrupt: float = 0.0):
        self.upstream = urlsplit(upstream)
        self.p_drop, self.p_truncate, self.p_503, self.p_corrupt = p_drop, p_truncate, p_503, p_corrupt
        self.only_get = only_get
        self.chunk_delay_s = chunk_delay_s
        self.requests: collections.Counter = collections.Counter()
        self.faults: collections.Counter = collections.Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _record(self, method: str, path: str) -> str | None:
        """Count the request and draw its fault (None, "drop", "truncate", "503" or "corrupt")."""
        parts = unquote(urlsplit(path).path).lstrip("/").split("/", 1)
        key = parts[1] if len(parts) == 2 else ""
        with self._lock:
            self.requests[(method, key)] += 1
            if self.only_get and not (method == "GET" and key):
                return None
            draw = self._rng.random()
        faults = (("drop", self.p_drop), ("truncate", self.p_truncate), ("503", self.p_503),
                  ("corrupt", self.p_corrupt))
        for fault, p in faults:
            if draw < p:
                if fault == "corrupt" and not (method == "GET" and key):
                    return None
                with self._lock:
                    self.faults[fault] += 1
                return fault
            draw -= p
        return None

    def _forward(self, method: str, path: str, headers, body: bytes | None):
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers={k: v for k, v in headers.items()
                                                            if k.lower() not in _HOP_BY_HOP})
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

        def log_message(self, format, *args):  # noqa: A002 - silence per-request logging
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault = proxy._record(self.command, self.path)
            if fault == "drop":
                self.close_connection = True
                return
            if fault == "503":
                self._send(503, [("Content-Type", "application/xml")], _SLOW_DOWN)
                return
            status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
            if fault == "truncate" and payload:
                self._send(status, headers, payload, cut=len(payload) // 2)
                return
            if fault == "corrupt" and payload:
                middle = len(payload) // 2
                payload = payload[:middle] + bytes([payload[middle] ^ 0xFF]) + payload[middle + 1:]
            self._send(status, headers, payload)

        def _send(self, status: int, headers, payload: bytes, cut: int | None = None) -> None:
            self.send_response_only(status)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
            else:
                self.send_header("Content-Length", str(len(payload)))
            if cut is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            data = payload if cut is None else payload[:cut]
            for start in range(0, len(data), 65536):
                if proxy.chunk_delay_s and start:
                    time.sleep(proxy.chunk_delay_s)
                self.wfile.write(data[start:start + 65536])
            self.wfile.flush()
            if cut is not None:
                self.close_connection = True

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

    return Handler
