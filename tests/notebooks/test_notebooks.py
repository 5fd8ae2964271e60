"""Every tutorial notebook executes top to bottom (nbclient, kernel python3); a failing cell fails the
suite. Runs go into a temp folder ($TWINS_NOTEBOOK_OUT), never into the repository."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_five_tutorials():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.slow  # each runs its own small simulations: about a minute apiece on 2 cores
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{path.name} is stored with outputs: clear them (jupyter nbconvert --clear-output --inplace)"
    monkeypatch.setenv("TWINS_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders every figure
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    print(f"{path.name}: executed in {time.perf_counter() - t0:.1f} s")
    assert any(p.is_dir() for p in tmp_path.iterdir()), "the notebook wrote nothing into TWINS_NOTEBOOK_OUT"
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    assert figures >= 3, f"{path.name} rendered {figures} figures; every tutorial shows at least 3"
