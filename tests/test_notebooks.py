"""Every numbered notebook executes top to bottom on its embedded defaults (papermill)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _printed(nb) -> str:
    """What the executed notebook shows a reader: stdout and the text of results (not warnings on stderr)."""
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                texts.append(out.get("text", ""))
            elif "data" in out:
                texts.append(out["data"].get("text/plain", ""))
    return "\n".join(texts)


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
    executed = tmp_path / path.name
    papermill.execute_notebook(str(path), str(executed), parameters=dict(figures_dir=str(figures)),
                               cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                               execution_timeout=600)  # a cell that hangs fails instead of stalling CI
    assert any(figures.glob("*.png")), "a notebook saves its figures"
    # (each figure went through localmamba.notebook.common.write_png, which refuses a panel that shows no data)
    assert str(ROOT) not in _printed(nbformat.read(executed, as_version=4)), \
        "a notebook prints paths relative to the checkout, not this machine's absolute ones"
