import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: intra-op threads only add contention on a 2-core CI box
    (measured 100x slower element-wise ops under load), so run these tests single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
