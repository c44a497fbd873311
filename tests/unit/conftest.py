"""Unit-test set-up shared by the torch tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: one thread avoids OpenMP spin-waits on a busy shared machine, and restores
    # the count that a test (or train_model, which sets it) changed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
