"""The notebooks run top to bottom on data/sample, and are stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
SAMPLE = PROJECT_ROOT / "data" / "sample"


def test_the_three_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01-explore-leads.ipynb",
        "02-train-and-compare.ipynb",
        "03-review-drivers.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_with_outputs_cleared(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        i for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_sample(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (SAMPLE / "leads.csv.gz").is_file():
        pytest.fail(f"{SAMPLE} has no leads.csv.gz: generate it with `make sample`")
    # Whatever a notebook might record goes to a throw-away store, never .leadscore/.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    # kernel "python3" is started with this interpreter (jupyter_client swaps "python" for
    # sys.executable), so the notebook imports the project installed in this venv.
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    assert outputs, f"{path.name} printed nothing"
