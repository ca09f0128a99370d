"""One torch thread for the federated tests: the shards compute on many tiny tensors, where extra threads only
add synchronisation (as in the agent actors, which also run one thread each)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
