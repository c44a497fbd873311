"""Tests for brainage.download.s3 against a real moto S3 server on loopback (and a fault proxy)."""

import hashlib
import logging
import random
import signal
import socket
import subprocess
import sys
import time

import boto3
import pytest
from s3_testing import FaultProxy, put_object, reset_server, upload_tree

from brainage.download.s3 import Bucket, ObjectInfo, S3Config, local_path
from brainage.errors import ConfigError, DownloadError, InputDataError

PREFIX = "data/Projects/Test/"


@pytest.fixture
def endpoint(s3_server):
    reset_server(s3_server)
    return s3_server


def _config(endpoint, **overrides):
    # Tiny backoff keeps retry tests fast; the schema's defaults are for the real bucket.
    settings = {"endpoint_url": endpoint, "max_workers": 4, "retries": 2, "backoff_s": 0.001, "timeout_s": 10}
    return S3Config(**(settings | overrides))


def _make_tree(root, sizes, seed=0):
    """Write files of the given sizes under root/PREFIX; return {key: bytes}."""
    rng = random.Random(seed)
    files = {}
    for name, size in sizes.items():
        key = PREFIX + name
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        files[key] = path.read_bytes()
    return files


SMALL_TREE = {"a.txt": 5, "sub-01/func/bold.nii.gz": 70_000, "sub-02/anat/T1w.nii.gz": 1, "empty.tsv": 0,
              "x/y/z/deep.1D": 3000}


def _items(bucket, root, prefix=PREFIX):
    return [(obj.key, local_path(root, obj.key, prefix), obj) for obj in bucket.list(prefix)]


def _check_complete(root, files, prefix=PREFIX):
    """Every source file is under its final name with identical bytes; no temporary is left."""
    for key, data in files.items():
        assert (root / key[len(prefix):]).read_bytes() == data, key
    assert not [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_round_trip(endpoint, tmp_path, capsys, caplog):
    files = _make_tree(tmp_path / "src", SMALL_TREE)
    assert upload_tree(endpoint, tmp_path / "src") == len(files)
    bucket = Bucket(_config(endpoint))
    listing = bucket.list(PREFIX)
    assert {o.key: (o.size, o.etag) for o in listing} == {
        k: (len(d), hashlib.md5(d).hexdigest()) for k, d in files.items()}
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="brainage.download.s3"):
        results = bucket.fetch_many(_items(bucket, out), desc="abide-test")
    assert [r.key for r in results] == [o.key for o in listing]  # input order
    for result in results:
        data = files[result.key]
        assert (result.status, result.size, result.md5) == ("fetched", len(data), hashlib.md5(data).hexdigest())
        assert result.path == out / result.key[len(PREFIX):]
    _check_complete(out, files)
    assert "abide-test" in capsys.readouterr().err  # the tqdm bar
    assert f"abide-test: 5 objects: 5 fetched, 0 present, 0 missing, 0 forbidden; {73006} bytes" in caplog.text


def test_list_follows_pages(endpoint, tmp_path):
    files = _make_tree(tmp_path / "src", SMALL_TREE)
    upload_tree(endpoint, tmp_path / "src")
    put_object(endpoint, "other/x", b"not under the prefix")
    with FaultProxy(endpoint, seed=0, p_drop=0, p_truncate=0, p_503=0) as proxy:
        bucket = Bucket(_config(proxy.url))
        bucket.page_size = 2
        assert sorted(o.key for o in bucket.list(PREFIX)) == sorted(files)
    assert proxy.requests[("GET", "")] == 3


def test_head(endpoint):
    put_object(endpoint, "k/one", b"hello")
    bucket = Bucket(_config(endpoint))
    assert bucket.head("k/one") == ObjectInfo("k/one", 5, hashlib.md5(b"hello").hexdigest())
    assert bucket.head("k/none") is None


def test_faults_are_retried_and_never_leave_a_bad_file(endpoint, tmp_path):
    sizes = {f"f{i:02d}.bin": 20_000 * (i % 4) + 17 for i in range(16)}
    files = _make_tree(tmp_path / "src", sizes, seed=1)
    upload_tree(endpoint, tmp_path / "src")
    # p(all of 31 attempts fail) = 0.7**31 ~ 2e-5 per request: the test is not flaky.
    with FaultProxy(endpoint, seed=7, p_drop=0.2, p_truncate=0.2, p_503=0.2, p_corrupt=0.1) as proxy:
        bucket = Bucket(_config(proxy.url, retries=30))
        results = bucket.fetch_many(_items(bucket, tmp_path / "out"), progress=False)
    assert {r.status for r in results} == {"fetched"}
    assert all(proxy.faults[f] > 0 for f in ("drop", "truncate", "503", "corrupt")), proxy.faults
    _check_complete(tmp_path / "out", files)


def test_resume_does_not_fetch_again(endpoint, tmp_path):
    files = _make_tree(tmp_path / "src", SMALL_TREE)
    upload_tree(endpoint, tmp_path / "src")
    out = tmp_path / "out"
    with FaultProxy(endpoint, seed=0, p_drop=0, p_truncate=0, p_503=0) as proxy:
        bucket = Bucket(_config(proxy.url))
        items = _items(bucket, out)
        bucket.fetch_many(items, progress=False)
        proxy.requests.clear()
        again = bucket.fetch_many(items, progress=False)
        assert {r.status for r in again} == {"present"}
        assert [r.md5 for r in again] == [hashlib.md5(files[r.key]).hexdigest() for r in again]
        assert sum(n for (method, _), n in proxy.requests.items() if method == "GET") == 0
        # Without a listing entry, one HEAD decides.
        key = PREFIX + "a.txt"
        proxy.requests.clear()
        assert bucket.fetch(key, out / "a.txt").status == "present"
        assert proxy.requests == {("HEAD", key): 1}
        # A local copy of the right size but other bytes is replaced.
        (out / "a.txt").write_bytes(b"XXXXX")
        assert bucket.fetch(key, out / "a.txt").status == "fetched"
    _check_complete(out, files)


def test_stale_temporaries_of_this_file_only_are_removed(endpoint, tmp_path):
    put_object(endpoint, "k/bold.nii.gz", b"12345")
    out = tmp_path / "out"
    out.mkdir()
    stale, other = out / ".tmp-ab_cd123-bold.nii.gz", out / ".tmp-ab_cd123-sub-bold.nii.gz"
    stale.write_bytes(b"12")
    other.write_bytes(b"12")
    result = Bucket(_config(endpoint)).fetch("k/bold.nii.gz", out / "bold.nii.gz")
    assert result.status == "fetched" and (out / "bold.nii.gz").read_bytes() == b"12345"
    assert not stale.exists() and other.exists()


_FETCH_SCRIPT = """
import sys
from pathlib import Path
from brainage.download.s3 import Bucket, S3Config, local_path
endpoint, root, prefix = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
bucket = Bucket(S3Config(endpoint_url=endpoint, max_workers=2, retries=2, backoff_s=0.001))
items = [(o.key, local_path(root, o.key, prefix), o) for o in bucket.list(prefix)]
bucket.fetch_many(items, progress=False)
"""


def test_killed_and_restarted(endpoint, tmp_path):
    sizes = {f"a_big{i:02d}.nii.gz": 1_000_000 + i for i in range(10)} | {f"small{i:02d}.tsv": 100 * i for i in range(30)}
    files = _make_tree(tmp_path / "src", sizes, seed=2)
    upload_tree(endpoint, tmp_path / "src")
    out = tmp_path / "out"
    with FaultProxy(endpoint, seed=0, p_drop=0, p_truncate=0, p_503=0, chunk_delay_s=0.03) as proxy:
        proc = subprocess.Popen([sys.executable, "-c", _FETCH_SCRIPT, proxy.url, str(out), PREFIX],
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        done = []
        while len(done) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            done = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        finished = {PREFIX + p.relative_to(out).as_posix() for p in out.rglob("*")
                    if p.is_file() and not p.name.startswith(".tmp-")}
        assert 3 <= len(finished) < len(files)
        for key in finished:  # the killed run left no partial file under a final name
            assert (out / key[len(PREFIX):]).read_bytes() == files[key]
        proxy.requests.clear()
        proxy.chunk_delay_s = 0
        bucket = Bucket(_config(proxy.url))
        results = bucket.fetch_many(_items(bucket, out), progress=False)
    assert {r.key for r in results if r.status == "present"} == finished
    assert not [k for k in finished if proxy.requests[("GET", k)]]
    _check_complete(out, files)


def test_missing_and_forbidden_do_not_stop_the_others(endpoint, tmp_path, caplog):
    put_object(endpoint, "k/public", b"public")
    put_object(endpoint, "k/private", b"private", public=False)
    bucket = Bucket(_config(endpoint))
    items = [(k, tmp_path / k, None) for k in ("k/private", "k/absent", "k/public")]
    with caplog.at_level(logging.INFO, logger="brainage.download.s3"):
        results = bucket.fetch_many(items, progress=False)
    assert [r.status for r in results] == ["forbidden", "missing", "fetched"]
    assert results[0].reason == f"HTTP 403 for s3://fcp-indi/k/private at {endpoint}"
    assert results[1].reason == f"HTTP 404 for s3://fcp-indi/k/absent at {endpoint}"
    assert (results[1].md5, results[1].size) == (None, None)
    assert (tmp_path / "k/public").read_bytes() == b"public"
    assert not (tmp_path / "k/private").exists() and not (tmp_path / "k/absent").exists()
    assert "3 objects: 1 fetched, 0 present, 1 missing, 1 forbidden; 6 bytes" in caplog.text
    # An existing local file whose object has gone is reported missing, not present.
    (tmp_path / "k/absent").write_bytes(b"old")
    assert bucket.fetch("k/absent", tmp_path / "k/absent").status == "missing"


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_fails_fast(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    bucket = Bucket(_config(url))
    message = rf"cannot reach {url} \(bucket fcp-indi\): .*; check indi.endpoint_url / network"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=message):
        bucket.list(PREFIX)
    with pytest.raises(DownloadError, match=message):
        bucket.fetch_many([(f"k/{i}", tmp_path / str(i), None) for i in range(6)], progress=False)
    assert time.monotonic() - start < 10


def test_missing_bucket(endpoint, tmp_path):
    bucket = Bucket(_config(endpoint, bucket="no-such-bucket"))
    with pytest.raises(DownloadError, match=f"bucket 'no-such-bucket' does not exist at {endpoint}"):
        bucket.list(PREFIX)
    with pytest.raises(DownloadError, match="bucket 'no-such-bucket' does not exist"):
        bucket.fetch("k/x", tmp_path / "x")


@pytest.mark.parametrize(("faults", "message"), [
    ({"p_truncate": 1.0}, "truncated body: received 5000 of 10000 bytes"),
    ({"p_corrupt": 1.0}, "md5 mismatch: received bytes hash to"),
    ({"p_503": 1.0}, "SlowDown"),
])
def test_persistent_fault_raises_after_retries(endpoint, tmp_path, faults, message):
    put_object(endpoint, "k/obj", bytes(10_000))
    settings = {"p_drop": 0, "p_truncate": 0, "p_503": 0} | faults
    with FaultProxy(endpoint, seed=0, only_get=True, **settings) as proxy:
        bucket = Bucket(_config(proxy.url))
        where = rf"s3://fcp-indi/k/obj at {proxy.url}: failed after 3 attempts: .*"
        with pytest.raises(DownloadError, match=where + message):
            bucket.fetch("k/obj", tmp_path / "obj")
        assert proxy.requests[("GET", "k/obj")] == 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("expected", "message"), [
    (ObjectInfo("k/obj", 9, None), "size mismatch: listed 9 bytes, the server sends 10"),
    (ObjectInfo("k/obj", 10, "0" * 32), f"md5/ETag mismatch: listed {'0' * 32}"),
])
def test_listing_that_disagrees_with_the_object_raises(endpoint, tmp_path, expected, message):
    put_object(endpoint, "k/obj", bytes(10))
    with pytest.raises(DownloadError, match="failed after 3 attempts: " + message):
        Bucket(_config(endpoint)).fetch("k/obj", tmp_path / "obj", expected)
    assert list(tmp_path.iterdir()) == []


def test_multipart_etag_is_checked_by_size(endpoint, tmp_path):
    put_object(endpoint, "k/placeholder", b"")  # creates the bucket
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                            aws_access_key_id="testing", aws_secret_access_key="testing")
    parts = [random.Random(3).randbytes(5 * 2**20), b"tail"]
    upload = client.create_multipart_upload(Bucket="fcp-indi", Key="k/multi", ACL="public-read")
    etags = [client.upload_part(Bucket="fcp-indi", Key="k/multi", UploadId=upload["UploadId"], PartNumber=n + 1,
                                Body=body)["ETag"] for n, body in enumerate(parts)]
    client.complete_multipart_upload(Bucket="fcp-indi", Key="k/multi", UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"ETag": etag, "PartNumber": n + 1} for n, etag in enumerate(etags)]})
    bucket = Bucket(_config(endpoint))
    info = bucket.head("k/multi")
    assert info.etag.endswith("-2")
    result = bucket.fetch("k/multi", tmp_path / "multi", info)
    assert (result.status, result.md5) == ("fetched", hashlib.md5(b"".join(parts)).hexdigest())
    assert bucket.fetch("k/multi", tmp_path / "multi", info).status == "present"


@pytest.mark.parametrize(("key", "message"), [
    ("../x", "'.' or '..' path component"),
    ("a/../b", "'.' or '..' path component"),
    ("./a", "'.' or '..' path component"),
    ("/etc/passwd", "absolute path"),
    ("a//b", "empty path component"),
    ("a/", "empty path component"),
    ("C:\\x", "Windows drive letter"),
    ("a\\b", "backslash"),
    ("a\x00b", "NUL"),
    ("", "empty key"),
])
def test_local_path_refuses_unsafe_keys(tmp_path, key, message):
    with pytest.raises(InputDataError, match=f"refusing S3 key .*: .*{message}"):
        local_path(tmp_path, key)


def test_local_path_strips_the_prefix(tmp_path):
    assert local_path(tmp_path, "data/P/sub-1/a.nii.gz", "data/P") == tmp_path / "sub-1/a.nii.gz"
    assert local_path(tmp_path, "data/P/sub-1/a.nii.gz", "data/P/") == tmp_path / "sub-1/a.nii.gz"
    with pytest.raises(InputDataError, match=r"S3 key 'data/PX/a': expected it to start with the prefix 'data/P/'"):
        local_path(tmp_path, "data/PX/a", "data/P")
    with pytest.raises(InputDataError, match="empty key"):
        local_path(tmp_path, "data/P/", "data/P")


def test_local_path_refuses_a_symlink_escape(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(InputDataError, match="resolves outside"):
        local_path(tmp_path / "root", "link/evil")


def test_hostile_key_in_a_listing_is_refused(endpoint, tmp_path):
    put_object(endpoint, "data/../../evil", b"x")
    put_object(endpoint, "data/good", b"y")
    keys = [obj.key for obj in Bucket(_config(endpoint)).list("data/")]
    assert keys == ["data/../../evil", "data/good"]
    with pytest.raises(InputDataError, match=r"refusing S3 key 'data/\.\./\.\./evil'"):
        local_path(tmp_path, keys[0], "data/")


def test_config_from_params():
    params = {"bucket": "b", "endpoint_url": "http://x", "anonymous": False, "max_workers": 2, "retries": 0,
              "backoff_s": 0.1, "timeout_s": 3.0}
    assert S3Config.from_params(params) == S3Config(**params)
    assert S3Config.from_params({}) == S3Config()
    with pytest.raises(ConfigError, match=r"indi: unknown key\(s\) \['retry'\]; allowed: .*'retries'"):
        S3Config.from_params({"retry": 3})


@pytest.mark.parametrize("bad", [{"max_workers": 0}, {"retries": -1}, {"backoff_s": -0.5}, {"timeout_s": 0}])
def test_config_refuses_bad_values(bad):
    name = next(iter(bad))
    with pytest.raises(ConfigError, match=f"indi.{name}: expected"):
        S3Config(**bad)


def test_fetch_many_refuses_duplicate_destinations(endpoint, tmp_path):
    with pytest.raises(ValueError, match="several items share a destination"):
        Bucket(_config(endpoint)).fetch_many([("a", tmp_path / "x", None), ("b", tmp_path / "x", None)])
