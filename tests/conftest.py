"""Test configuration shared by the whole suite.

Without a GPU, Triton kernels run under the interpreter (TRITON_INTERPRET=1 must be set before any
kernel is defined, hence here). bf16 arithmetic is broken in the interpreter (docs/building.md), so CPU runs
test Triton in fp32/fp16 and GPU runs add bf16.
"""
import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
# dtypes a fast backend is tested in on this machine
FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16) if HAS_CUDA else (torch.float32, torch.float16)
# fast backends runnable on this machine
FAST_BACKENDS = ("triton", "cuda") if HAS_CUDA else ("triton",)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(scope="module")
def one_thread():
    """Tiny-model matmuls on a shared 2-core machine run far faster single-threaded (no OpenMP spinning).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
