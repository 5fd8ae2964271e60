import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _audit_log_outside_the_repo(tmp_path_factory):
    """Runs with an ethics review append to the audit log; keep the suite's entries out of ./outputs."""
    old = os.environ.get("TWINS_AUDIT_LOG")
    os.environ["TWINS_AUDIT_LOG"] = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    yield
    if old is None:
        os.environ.pop("TWINS_AUDIT_LOG", None)
    else:
        os.environ["TWINS_AUDIT_LOG"] = old


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core runner, torch's thread pool spinning against other
    processes made small ops up to 100x slower. Results do not depend on the thread count."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
