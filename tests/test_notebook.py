"""notebooks/chapter.ipynb runs top to bottom (on the synthetic data, a few steps)."""

import json

import pytest

from autoencoders.config import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "chapter.ipynb"


@pytest.mark.slow
def test_the_chapter_notebook_runs_top_to_bottom(mnist_split_dir, tmp_path, monkeypatch):
    import nbformat  # here, not at the top: importing it takes seconds, and the quick test
    from nbclient import NotebookClient  # below reads the file as the JSON it is

    monkeypatch.setenv("CHAPTER_DATA_DIR", str(mnist_split_dir))
    monkeypatch.setenv("CHAPTER_STEPS", "5")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()  # a cell that raises fails the test, naming it
    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) == 3  # plain; sparse with zeroing; denoising
    text = "".join(output.get("text", "") for output in outputs)
    assert "'train': 600, 'val': 5000, 'test': 300" in text  # the notebook trains on 600
    assert "test BCE after 5 minibatches" in text and "masked input" in text


def test_the_committed_notebook_shows_a_run_on_mnist():
    notebook = json.loads(NOTEBOOK.read_text())  # nbformat 4: a text is a list of lines
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["execution_count"] for cell in code)  # every cell ran, in order
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))
    text = "".join("".join(o.get("text", "")) for cell in code for o in cell["outputs"])
    assert "'train': 55000, 'val': 5000, 'test': 10000" in text
    assert "test BCE after 10,000 minibatches" in text
