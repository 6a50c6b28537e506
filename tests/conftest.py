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


@pytest.fixture(scope="module", params=["small", "large"])
def reference_size_route(request):
    """Run a module's tests on both size routes of the reference backends that pick their route by input size:
    "small" (``varlen_pool``: ``segment_reduce``; ``weighted_layer_sum``: stacked), "large" (the index ops; streaming).
    Use with ``pytestmark = pytest.mark.usefixtures("reference_size_route")``."""
    from alarm_kernels.varlen_pool import reference as pool
    from alarm_kernels.weighted_layer_sum import reference as layer_sum

    previous = pool.SEGMENT_ELEMENTS, layer_sum.STACKED_ELEMENTS
    pool.SEGMENT_ELEMENTS = layer_sum.STACKED_ELEMENTS = 2**62 if request.param == "small" else -1
    yield request.param
    pool.SEGMENT_ELEMENTS, layer_sum.STACKED_ELEMENTS = previous
