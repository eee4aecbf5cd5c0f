"""Every numbered notebook executes top to bottom on its embedded defaults (papermill)."""
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    papermill = pytest.importorskip("papermill")
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs cleared"
    figures = tmp_path / "figures"
    papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters=dict(figures_dir=str(figures)),
                               cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                               execution_timeout=600)  # a cell that hangs fails instead of stalling CI
    assert any(figures.glob("*.png")), "a notebook saves its figures"
