"""Bad compute settings: clear errors naming the field, the value and what is valid."""
import pytest
import torch

from twins.compute.ray_backend import check_address
from twins.core import runner
from twins.core.errors import ConfigError

from .conftest import compose_cfg

BASE = ["scenario=junction", "horizon_s=60", "replications=2"]


@pytest.mark.parametrize("value", [0, -3])
def test_chunk_size_zero_or_negative(tmp_path, value):
    with pytest.raises(ConfigError, match=r"compute.max_worlds_per_chunk=.*expected an integer >= 1"):
        runner.run(compose_cfg(*BASE, f"compute.max_worlds_per_chunk={value}"), tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_where_none_exists(tmp_path, device):
    with pytest.raises(ConfigError, match=r"compute.device=.*auto or cpu on this machine.*no CUDA device"):
        runner.run(compose_cfg(*BASE, f"compute.device={device}"), tmp_path)


def test_unknown_backend_and_fraction(tmp_path):
    with pytest.raises(ConfigError, match=r"compute.backend='rai'.*local or ray.*Did you mean 'ray'"):
        runner.run(compose_cfg(*BASE, "compute.backend=rai"), tmp_path)
    with pytest.raises(ConfigError, match=r"compute.memory_fraction=1.5"):
        runner.run(compose_cfg(*BASE, "compute.memory_fraction=1.5"), tmp_path)


@pytest.mark.parametrize("address", ["ray://127.0.0.1:1", "127.0.0.1:1", "nonsense"])
def test_unreachable_or_malformed_ray_address(address):
    with pytest.raises(ConfigError) as e:
        check_address(address)
    msg = str(e.value)
    assert f"compute.address={address!r}" in msg and "local" in msg and "auto" in msg and "ray://" in msg
    if address != "nonsense":
        assert "Nothing answers at 127.0.0.1:1" in msg


def test_unreachable_ray_address_from_the_cli(tmp_path, capsys):
    """The same through the run task, before any compute (no Ray instance is started)."""
    import ray

    with pytest.raises(ConfigError, match=r"compute.address='ray://127.0.0.1:1'"):
        runner.run(compose_cfg(*BASE, "compute=ray", "compute.address=ray://127.0.0.1:1"), tmp_path)
    assert not ray.is_initialized()


@pytest.mark.skipif(bool(__import__("os").environ.get("RAY_ADDRESS"))
                    or __import__("pathlib").Path("/tmp/ray/ray_current_cluster").exists(),
                    reason="a Ray cluster may be running on this machine")
def test_ray_address_auto_without_a_cluster():
    import ray

    from twins.compute.ray_backend import connect

    if ray.is_initialized():
        pytest.skip("this process is connected to Ray already")
    with pytest.raises(ConfigError, match=r"compute.address='auto'.*No running Ray cluster was found"):
        connect(compose_cfg(*BASE, "compute=ray", "compute.address=auto"))


def test_cli_rejects_chunk_size_zero_before_starting():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "twins", "run", "scenario=junction", "compute.max_worlds_per_chunk=0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "compute.max_worlds_per_chunk=0 is invalid: expected an integer >= 1" in r.stderr
