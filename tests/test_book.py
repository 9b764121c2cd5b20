"""`make book`: executed notebooks -> a static HTML site with inline figures and the results table."""
import base64
import re

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from sts_utils import book

# a 1x1 PNG
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2a7e6"
    "5a0000000049454e44ae426082"
)).decode()


def executed_notebook(title: str, text: str) -> nbformat.NotebookNode:
    figure = new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure size 100x100>"})
    stream = new_output("stream", name="stdout", text=f"{text}\n")
    nb = new_notebook(cells=[
        new_markdown_cell(f"# {title}\n\nSome *prose* about {text}."),
        new_code_cell("DATASET = 'demo'", metadata={"tags": ["parameters"]}, execution_count=1),
        new_code_cell("plot()", outputs=[stream, figure], execution_count=2),
    ])
    nb.metadata["kernelspec"] = {"name": "sts", "display_name": "Python (sts)", "language": "python"}
    return nb


@pytest.fixture
def executed(tmp_path):
    build, figures = tmp_path / "build", tmp_path / "figures"
    (build / "demo").mkdir(parents=True)
    (figures / "demo").mkdir(parents=True)
    # written out of order: the book sorts them numerically
    nbformat.write(executed_notebook("10 — Later", "later"), build / "demo" / "10_later.ipynb")
    nbformat.write(executed_notebook("02 — Scalograms", "scalograms"), build / "demo" / "02_scalograms.ipynb")
    for skipped in ("03_splitting.failed.ipynb", "04_finetune.part.ipynb", "05_testing.source.ipynb"):
        nbformat.write(executed_notebook("skipped", "skipped"), build / "demo" / skipped)
    pd.DataFrame({"model": ["resnet18", "lightgbm"], "balanced_accuracy": [0.812345, 0.7],
                  "ci_low": [0.71234, 0.6019]}).to_csv(figures / "demo" / "results_table.csv", index=False)
    return build, figures


def test_book_index_pages_and_figures(executed):
    build, figures = executed
    assert book.main(["--dataset", "demo", "--build-dir", str(build), "--figures-dir", str(figures)]) == 0
    out = build / "demo" / "book"
    index = (out / "index.html").read_text()

    links = re.findall(r'<a href="([^"]+\.html)">', index)
    assert links == ["02_scalograms.html", "10_later.html"]          # numeric order, skipped ones left out
    assert sorted(p.name for p in out.glob("*.html")) == ["02_scalograms.html", "10_later.html", "index.html"]
    for link in links:
        page = (out / link).read_text()
        assert re.search(r'<img[^>]+src="data:image/png;base64,', page), f"{link}: no inline figure"
        assert 'href="index.html"' in page
        assert "prose" in page                                         # the Markdown cell is rendered
    assert "02 — Scalograms" in index

    for number in ("0.812", "0.700", "0.712", "0.602"):
        assert f"<td>{number}</td>" in index
    assert "0.812345" not in index
    assert "SIMULATED" in index                                        # demo is labelled simulated


def test_book_without_results_table_and_stale_pages(executed):
    build, figures = executed
    (figures / "demo" / "results_table.csv").unlink()
    stale = build / "demo" / "book" / "09_gone.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    index = book.build_book("demo", build, figures)
    assert "No results table yet" in index.read_text()
    assert not stale.exists()


def test_book_without_notebooks_fails_with_one_line(tmp_path, capsys):
    assert book.main(["--dataset", "demo", "--build-dir", str(tmp_path)]) == 1
    assert "make paper" in capsys.readouterr().err


def test_book_layer_imports_only_config_and_io():
    source = open(book.__file__).read()
    imported = set(re.findall(r"^from \.(\w*) import|^from sts_utils\.(\w+)", source, flags=re.M))
    modules = {a or b for a, b in imported}
    assert modules <= {"", "config", "io"}
    assert set(re.findall(r"^from \. import (.+)$", source, flags=re.M)) <= {"config"}
