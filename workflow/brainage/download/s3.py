"""Verified, resumable, parallel fetching of objects from an S3-protocol store (the INDI bucket)."""

from __future__ import annotations

import hashlib
import logging
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

import boto3
import botocore.exceptions as boto_errors
from botocore import UNSIGNED
from botocore.config import Config
from tqdm import tqdm

from brainage.errors import ConfigError, DownloadError, InputDataError
from brainage.storage import atomic_path

log = logging.getLogger(__name__)
T = TypeVar("T")

_CHUNK = 1 << 20  # bytes per read from the response stream
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")  # a single-part upload's ETag is the md5 of its bytes
_DRIVE = re.compile(r"^[A-Za-z]:")
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable"}
# Failures that a later attempt can cure. The connection-level ones mean "the endpoint is not
# answering" and get the "cannot reach" message once the retries are spent.
_UNREACHABLE = (boto_errors.ConnectionError, boto_errors.ConnectionClosedError, boto_errors.ReadTimeoutError)
_TRANSIENT = (*_UNREACHABLE, boto_errors.HTTPClientError, boto_errors.IncompleteReadError,
              boto_errors.FlexibleChecksumError)


@dataclass(frozen=True)
class S3Config:
    """Where and how to read the bucket (the ``indi:`` config section).

    Parameters
    ----------
    bucket, endpoint_url : str
        Bucket name and service endpoint; objects are addressed path-style
        (``<endpoint_url>/<bucket>/<key>``).
    anonymous : bool
        Send unsigned requests (public buckets such as ``fcp-indi`` need no credentials).
    max_workers : int
        Parallel GETs in :meth:`Bucket.fetch_many`.
    retries : int
        Attempts after the first, per request, for connection errors, truncated bodies,
        checksum mismatches and 5xx/throttling answers.
    backoff_s : float
        Base of the exponential backoff, seconds: attempt ``i`` waits ``backoff_s * 2**i``
        times a jitter factor in [0.5, 1.5).
    timeout_s : float
        Connect and read timeout, seconds.
    section : str
        The config section these settings come from, named in error messages.
    """

    bucket: str = "fcp-indi"
    endpoint_url: str = "https://s3.amazonaws.com"
    anonymous: bool = True
    max_workers: int = 8
    retries: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 60.0
    section: str = "indi"

    def __post_init__(self):
        checks = {"max_workers": (self.max_workers >= 1, ">= 1"), "retries": (self.retries >= 0, ">= 0"),
                  "backoff_s": (self.backoff_s >= 0, ">= 0"), "timeout_s": (self.timeout_s > 0, "> 0")}
        for name, (ok, wanted) in checks.items():
            if not ok:
                raise ConfigError(f"{self.section}.{name}: expected a number {wanted}, found {getattr(self, name)!r}")

    @classmethod
    def from_params(cls, params: dict) -> S3Config:
        """Build from the ``indi:`` config section; an unknown key raises ``ConfigError``."""
        allowed = {f.name for f in fields(cls)} - {"section"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ConfigError(f"indi: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**params)


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing: key, size in bytes and ETag (without quotes)."""

    key: str
    size: int
    etag: str | None


@dataclass(frozen=True)
class FetchResult:
    """Outcome of one fetch.

    ``status`` is ``"fetched"``, ``"present"`` (already on disk and verified, not downloaded
    again), ``"missing"`` (404) or ``"forbidden"`` (403); ``size`` (bytes) and ``md5`` (hex) describe
    the local file for fetched/present; ``reason`` explains missing/forbidden.
    """

    key: str
    path: Path
    status: str
    size: int | None
    md5: str | None
    reason: str | None


class _Mismatch(Exception):
    """Received bytes that do not match the announced size or checksum (worth another attempt)."""


def local_path(root: Path, key: str, prefix: str = "") -> Path:
    """Map a key from a listing to a path under ``root``, refusing keys that could escape it.

    ``prefix`` is a folder of keys (a trailing ``/`` is implied) that is stripped from ``key``.
    Raises ``InputDataError`` naming the key and the reason for an empty, absolute or
    drive-lettered key, a ``.``/``..``/empty component, a backslash or a NUL.
    """
    folder = prefix.rstrip("/") + "/" if prefix else ""
    if not key.startswith(folder):
        raise InputDataError(f"S3 key {key!r}: expected it to start with the prefix {folder!r}")
    relative = key[len(folder):]
    reason = _unsafe(relative)
    if reason:
        raise InputDataError(f"refusing S3 key {key!r} as a local path: {reason}")
    root = Path(root)
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise InputDataError(f"refusing S3 key {key!r}: it resolves outside {root}")
    return path


def _unsafe(relative: str) -> str | None:
    if not relative:
        return "empty key (after the prefix)"
    if "\x00" in relative:
        return "contains a NUL character"
    if _DRIVE.match(relative):
        return "starts with a Windows drive letter"
    if "\\" in relative:
        return "contains a backslash"
    if relative.startswith("/"):
        return "absolute path"
    parts = relative.split("/")
    if "" in parts:
        return "empty path component ('//' or a trailing '/')"
    if "." in parts or ".." in parts:
        return "'.' or '..' path component"
    return None


def _status(err: boto_errors.ClientError) -> tuple[int, str]:
    return err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0), err.response["Error"].get("Code", "")


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_stale_temps(dest: Path) -> None:
    # atomic_path names its temporaries ".tmp-<random>-<name>" beside the target; the random
    # part has no "-", so this matches this file's leftovers only, never another file's.
    if not dest.parent.is_dir():
        return
    pattern = re.compile(r"\.tmp-[a-z0-9_]+-" + re.escape(dest.name))
    for stale in dest.parent.iterdir():
        if pattern.fullmatch(stale.name):
            log.info("removing %s left by an interrupted download", stale)
            stale.unlink(missing_ok=True)


class Bucket:
    """Anonymous (or credentialed) read access to one bucket, with verification and retries.

    Parameters
    ----------
    config : S3Config
        Endpoint, bucket, parallelism, retry and timeout settings.
    """

    page_size = 1000  # keys per ListObjectsV2 page (S3's maximum)

    def __init__(self, config: S3Config):
        self.config = config
        botocore_config = Config(
            # One attempt per botocore call: _retry() owns retries, because botocore's own do
            # not cover a body that breaks off while it is being streamed.
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=config.timeout_s,
            read_timeout=config.timeout_s,
            max_pool_connections=max(10, config.max_workers),
            s3={"addressing_style": "path"},
            signature_version=UNSIGNED if config.anonymous else None,
        )
        # A private session: the default one is not thread-safe to create clients from.
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=config.endpoint_url, region_name="us-east-1", config=botocore_config)
        self._jitter = random.Random()

    def _where(self, key: str) -> str:
        return f"s3://{self.config.bucket}/{key} at {self.config.endpoint_url}"

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        """Call ``action`` up to ``1 + retries`` times, backing off between transient failures."""
        attempts, last = self.config.retries + 1, None
        for attempt in range(attempts):
            try:
                return action()
            except (*_TRANSIENT, _Mismatch) as err:
                last = err
            except boto_errors.ClientError as err:
                status, code = _status(err)
                if status < 500 and code not in _THROTTLED:
                    raise
                last = err
            if attempt + 1 < attempts:
                delay = self.config.backoff_s * 2**attempt * self._jitter.uniform(0.5, 1.5)
                log.debug("%s: %s; retrying in %.2f s", what, last, delay)
                time.sleep(delay)
        if isinstance(last, _UNREACHABLE):
            raise DownloadError(f"cannot reach {self.config.endpoint_url} (bucket {self.config.bucket}): "
                                f"{last}; check {self.config.section}.endpoint_url / network")
        raise DownloadError(f"{what}: failed after {attempts} attempts: {last}")

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (paginated ListObjectsV2)."""
        request = {"Bucket": self.config.bucket, "Prefix": prefix, "MaxKeys": self.page_size}
        objects = []
        while True:
            try:
                page = self._retry(f"listing {self._where(prefix)}",
                                   lambda: self._client.list_objects_v2(**request))
            except boto_errors.ClientError as err:
                status, code = _status(err)
                if code == "NoSuchBucket":
                    raise DownloadError(f"bucket {self.config.bucket!r} does not exist at "
                                        f"{self.config.endpoint_url}; check {self.config.section}.bucket") from err
                raise DownloadError(f"listing {self._where(prefix)}: HTTP {status} {code}") from err
            objects += [ObjectInfo(obj["Key"], obj["Size"], obj.get("ETag", "").strip('"') or None)
                        for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return objects
            request["ContinuationToken"] = page["NextContinuationToken"]

    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of one object, or None if it does not exist (other HTTP errors raise)."""
        try:
            answer = self._retry(f"HEAD {self._where(key)}",
                                 lambda: self._client.head_object(Bucket=self.config.bucket, Key=key))
        except boto_errors.ClientError as err:
            if _status(err)[0] == 404:
                return None
            raise
        return ObjectInfo(key, answer["ContentLength"], answer.get("ETag", "").strip('"') or None)

    def fetch(self, key: str, dest: Path, expected: ObjectInfo | None = None) -> FetchResult:
        """Download one object to ``dest`` (atomically, verified), unless a verified copy is there.

        Parameters
        ----------
        key : str
            Object key.
        dest : Path
            Final local path; parent folders are created.
        expected : ObjectInfo, optional
            Size and ETag from a listing. Without it, an existing ``dest`` is checked against a HEAD.

        Returns
        -------
        FetchResult
            ``fetched``/``present`` with the local size and md5, or ``missing``/``forbidden``.

        Raises
        ------
        DownloadError
            The endpoint is unreachable, the bucket does not exist, or the retries are spent.
        """
        dest = Path(dest)
        _remove_stale_temps(dest)
        try:
            if dest.is_file():
                info = expected or self.head(key)
                if info is None:
                    return self._refused(key, dest, "missing", 404)
                if dest.stat().st_size == info.size:
                    md5 = _md5_file(dest)
                    if not _MD5_ETAG.match(info.etag or "") or md5 == info.etag:
                        return FetchResult(key, dest, "present", info.size, md5, None)
                log.info("%s does not match %s; downloading it again", dest, self._where(key))
            size, md5 = self._retry(f"download of {self._where(key)}", lambda: self._get(key, dest, expected))
        except boto_errors.ClientError as err:
            status, code = _status(err)
            if code == "NoSuchBucket":
                raise DownloadError(f"bucket {self.config.bucket!r} does not exist at "
                                    f"{self.config.endpoint_url}; check {self.config.section}.bucket") from err
            if status in (403, 404):
                return self._refused(key, dest, "forbidden" if status == 403 else "missing", status)
            raise DownloadError(f"download of {self._where(key)}: HTTP {status} {code}") from err
        return FetchResult(key, dest, "fetched", size, md5, None)

    def _refused(self, key: str, dest: Path, status: str, http: int) -> FetchResult:
        reason = f"HTTP {http} for s3://{self.config.bucket}/{key} at {self.config.endpoint_url}"
        log.warning("%s: %s", status, reason)
        return FetchResult(key, dest, status, None, None, reason)

    def _get(self, key: str, dest: Path, expected: ObjectInfo | None) -> tuple[int, str]:
        """One GET streamed into a temporary file, verified, then renamed onto ``dest``."""
        answer = self._client.get_object(Bucket=self.config.bucket, Key=key)
        size = answer["ContentLength"]
        etag = answer.get("ETag", "").strip('"')
        if expected is not None and expected.size != size:
            answer["Body"].close()
            raise _Mismatch(f"size mismatch: listed {expected.size} bytes, the server sends {size}")
        if expected is not None and expected.etag and etag and expected.etag != etag:
            answer["Body"].close()
            raise _Mismatch(f"md5/ETag mismatch: listed {expected.etag}, the server sends {etag}")
        digest, received = hashlib.md5(usedforsecurity=False), 0
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                try:
                    for chunk in answer["Body"].iter_chunks(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                except (boto_errors.IncompleteReadError, boto_errors.ResponseStreamingError) as err:
                    raise _Mismatch(f"truncated body: received {received} of {size} bytes ({err})") from err
            if received != size:
                raise _Mismatch(f"truncated body: received {received} of {size} bytes")
            if _MD5_ETAG.match(etag) and digest.hexdigest() != etag:
                raise _Mismatch(f"md5 mismatch: received bytes hash to {digest.hexdigest()}, ETag is {etag}")
        return size, digest.hexdigest()

    def fetch_many(self, items: Sequence[tuple[str, Path, ObjectInfo | None]], *,
                   progress: bool = True, desc: str = "download") -> list[FetchResult]:
        """Fetch many objects in parallel (``config.max_workers`` threads); results in input order.

        ``items`` holds ``(key, dest, expected)`` triples with distinct ``dest``. A tqdm bar over
        files (bytes in its postfix) goes to stderr; an INFO line summarises the run. The first
        ``DownloadError`` cancels the fetches not yet started and is raised.
        """
        dests = Counter(Path(dest) for _, dest, _ in items)
        duplicates = sorted(str(dest) for dest, n in dests.items() if n > 1)
        if duplicates:
            raise ValueError(f"fetch_many: several items share a destination: {duplicates[:5]}")
        start = time.monotonic()
        results: list[FetchResult | None] = [None] * len(items)
        fetched_bytes = 0
        with (ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="s3") as pool,
              tqdm(total=len(items), desc=desc, unit="file", file=sys.stderr, disable=not progress,
                   # A log file (Snakemake's log:) gets a line every 30 s, not every redraw.
                   mininterval=0.1 if sys.stderr.isatty() else 30.0) as bar):
            futures = {pool.submit(self.fetch, *item): i for i, item in enumerate(items)}
            try:
                for future in as_completed(futures):
                    result = results[futures[future]] = future.result()
                    if result.status == "fetched":
                        fetched_bytes += result.size
                    bar.update(1)
                    bar.set_postfix_str(f"{fetched_bytes / 1e6:.1f} MB", refresh=False)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        counts = Counter(result.status for result in results)
        log.info("%s: %d objects: %d fetched, %d present, %d missing, %d forbidden; %d bytes in %.1f s",
                 desc, len(items), counts["fetched"], counts["present"], counts["missing"],
                 counts["forbidden"], fetched_bytes, time.monotonic() - start)
        return results
