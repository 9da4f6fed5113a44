"""Shared pieces of MESM's sparse-path tests: the backends to run on, and spconv's thread limit."""

from contextlib import contextmanager

import pytest
import torch

from e2e.models.layers import sparse_conv  # the e2e package's compat shim runs before spconv loads

BACKENDS = [
    pytest.param("spconv", marks=pytest.mark.skipif(sparse_conv.spconv is None, reason="spconv not installed")),
    "torch",
]


@contextmanager
def threads_for(backend: str):
    """spconv's CPU kernels are only correct single-threaded (see e2e.models.layers.sparse_conv)."""
    threads = torch.get_num_threads()
    if backend == "spconv":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
