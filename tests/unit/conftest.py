"""Unit-test set-up: one thread for the torch tests, one loopback S3 server for the download tests."""

import pytest
import torch
from s3_testing import moto_server


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: one thread avoids OpenMP spin-waits on a busy shared machine, and restores
    # the count that a test (or train_model, which sets it) changed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server():
    """A real moto S3 server on 127.0.0.1, started once; tests that use it reset it first."""
    with moto_server() as url:
        yield url
