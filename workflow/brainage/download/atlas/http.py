"""HTTPS downloads of atlas files through nilearn's fetcher: mirror URLs, retries and one clear error."""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests
from urllib3.exceptions import NewConnectionError

from brainage.errors import ConfigError, DownloadError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Atlases downloaded over HTTPS, whose base URL ``atlas_fetch.urls.<name>`` may replace.
FETCHED = ("schaefer", "harvard_oxford", "msdl", "basc", "pcp")
ATTEMPTS = 3  # per download; a broken connection or a 5xx answer is tried again
BACKOFF_S = 1.0  # attempt i waits BACKOFF_S * 2**i seconds
_STAGING = re.compile(r"^[0-9a-f]{32}$")  # nilearn's fetch_files stages downloads in data_dir/<md5 hex>


def check_urls(urls: dict | None) -> dict[str, str]:
    """Check the ``atlas_fetch.urls`` mapping (atlas name -> mirror base URL); returns a copy.

    Raises
    ------
    ConfigError
        A key that is not a fetched atlas, or a value that is not an http(s) URL.
    """
    urls = dict(urls or {})
    for name, url in urls.items():
        if name not in FETCHED:
            raise ConfigError(f"atlas_fetch.urls: {name!r} is not a downloaded atlas; valid keys: {', '.join(FETCHED)}")
        if not isinstance(url, str) or not re.match(r"^https?://[^/]", url):
            raise ConfigError(f"atlas_fetch.urls.{name}: expected an http:// or https:// base URL, found {url!r}")
    return urls


def file_url(urls: dict[str, str], name: str, default_base: str, filename: str) -> str:
    """The URL of ``filename``: the mirror base URL of atlas ``name`` if configured, else the public one.

    A mirror serves the same files under the same names as the public base URL (the part of
    the public URL before the file name).
    """
    base = urls.get(name, default_base)
    return base.rstrip("/") + "/" + filename


def fetch_into(dataset_dir: Path, files: list[str], url: str, *, atlas: str, archive: bool,
               md5: str | None = None) -> list[Path]:
    """Make ``files`` exist under ``dataset_dir``, downloading ``url`` (an archive or one file) if not.

    nilearn's ``fetch_files`` does the transfer: a partial download resumes (HTTP Range), an
    archive is unpacked in a staging folder and moved in only when every file is there, and
    an ``md5`` is checked. Here: retries for transient failures and one clear error.

    Parameters
    ----------
    dataset_dir : Path
        The nilearn dataset folder (``<data_dir>/<dataset name>``); paths in ``files`` are relative to it.
    files : list of str
        The files the download must provide (for an archive: its members, as nilearn expects them).
    url : str
    atlas : str
        Registry name, named in errors (and the ``atlas_fetch.urls`` key to fix them).
    archive : bool
        Whether ``url`` is a zip/tar/gzip archive to unpack.
    md5 : str, optional
        Hex md5 of the downloaded file (single files only).

    Returns
    -------
    list of Path
        The files, in the order given.

    Raises
    ------
    DownloadError
        The server cannot be reached, answers an error, or sends something else than expected.
    """
    from nilearn.datasets._utils import fetch_files

    opts = ({"uncompress": True} if archive else {}) | ({"md5sum": md5} if md5 else {})
    missing = [f for f in files if not (dataset_dir / f).is_file()]
    if missing:
        logger.info("atlas %s: downloading %s into %s", atlas, url, dataset_dir)
    entries = [(f, url, opts) for f in files]
    return [Path(p) for p in with_retries(lambda: fetch_files(dataset_dir, entries, resume=True, verbose=0),
                                          atlas=atlas, url=url, dataset_dir=dataset_dir)]


def with_retries(call: Callable[[], T], *, atlas: str, url: str, dataset_dir: Path) -> T:
    """Run a nilearn download ``call``; retry transient failures; raise one ``DownloadError`` otherwise.

    Parameters
    ----------
    call : callable
        A nilearn fetcher call (``fetch_files`` or a ``fetch_atlas_*`` function).
    atlas, url : str
        Named in the error message (``url`` unless the failed request names its own).
    dataset_dir : Path
        Where a rejected download's staging folder is removed (so that the next run does not
        accept it); a broken-off one is kept, and resumed.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except requests.RequestException as err:  # before OSError: it is one
            failed = getattr(err.request, "url", None) or url  # the file that failed, of several
            if not _transient(err) or attempt == ATTEMPTS:
                raise DownloadError(fetch_error(atlas, failed, _reason(err), attempt)) from err
            delay = BACKOFF_S * 2 ** (attempt - 1)
            logger.warning("atlas %s: %s: %s; trying again in %.1f s", atlas, failed, _reason(err), delay)
            time.sleep(delay)
        except (OSError, ValueError) as err:  # nilearn: archive lacks a file, bad checksum, unpacking failed
            _drop_staging(dataset_dir)
            raise DownloadError(fetch_error(atlas, url, f"unexpected content: {err}", attempt)) from err


def fetch_error(atlas: str, url: str, reason: str, attempts: int) -> str:
    """The one message of a failed download: the atlas, the URL, why, and the config keys to change."""
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    return (f"atlas {atlas!r}: cannot download {url}{tries}: {reason}. Without network access, set "
            f"atlas_fetch.urls.{atlas} to the base URL of a mirror that serves the same files, or use "
            f"{{name: file, path: <label image>}} in atlases; downloads are cached under atlas_fetch.data_dir")


def _transient(err: requests.RequestException) -> bool:
    if isinstance(err, requests.HTTPError):
        status = err.response.status_code if err.response is not None else 0
        return status >= 500 or status == 429
    if isinstance(err, requests.ConnectionError):
        # A host that does not resolve or refuses connections will not do better in a second.
        return not isinstance(getattr(err.args[0] if err.args else None, "reason", None), NewConnectionError)
    return isinstance(err, requests.Timeout | requests.exceptions.ChunkedEncodingError)


def _reason(err: requests.RequestException) -> str:
    if isinstance(err, requests.HTTPError) and err.response is not None:
        return f"HTTP {err.response.status_code} {err.response.reason}"
    inner = getattr(err.args[0] if err.args else None, "reason", None)
    if isinstance(inner, NewConnectionError):
        return f"the server cannot be reached ({str(inner).split(': ', 1)[-1]})"
    return f"{type(err).__name__}: {err}"


def _drop_staging(dataset_dir: Path) -> None:
    if dataset_dir.is_dir():
        for path in dataset_dir.iterdir():
            if path.is_dir() and _STAGING.match(path.name):
                shutil.rmtree(path, ignore_errors=True)
