"""The executed notebooks as a static web book: ``build/<dataset>/*.ipynb`` -> ``build/<dataset>/book/``.

``make book [DATASET=demo]`` (or ``python -m sts_utils.book --dataset demo [--build-dir build]
[--figures-dir figures]``) writes

* ``index.html``: the dataset's results table (``figures/<dataset>/results_table.csv`` when it
  exists, numbers to 3 decimals) and a link to one page per notebook, in numeric order;
* ``NN_name.html`` per executed notebook: the notebook rendered by nbconvert's HTML exporter (the
  JupyterLab look), figures embedded as ``data:`` URIs, so every page is one self-contained file that
  can be opened from disk, mailed or put on any static host.

Why nbconvert: it is already installed with jupyterlab/papermill, runs offline and renders the
*executed* notebooks as they are (no re-execution). Jupyter Book 2 / mystmd would need Node.js and
downloads its theme on first use; Sphinx + myst-nb would do it too but adds a documentation toolchain
and configuration for a handful of pages. Only the math in Markdown cells needs the network: the page
asks a CDN for MathJax and shows the TeX source when offline.

Presentation layer: it reads executed notebooks and the results CSV; it imports only
``sts_utils.config``/``sts_utils.io`` from the package (plus nbconvert, nbformat, pandas).
"""
from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd

from . import config
from .io import write_text_atomic

#: executed-notebook names that are not finished results (papermill partials, failures, sources)
SKIP_SUFFIXES = (".failed.ipynb", ".part.ipynb", ".source.ipynb")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
ol li { margin: 0.3rem 0; }
.note { color: #555; font-size: 0.9rem; }
"""

_NAV_STYLE = ("font-family: system-ui, sans-serif; font-size: 0.9rem; padding: 0.5rem 1rem; "
              "border-bottom: 1px solid #ddd; background: #fafafa;")


def executed_notebooks(build_dir: Path) -> list[Path]:
    """The finished executed notebooks in ``build_dir``, in numeric order (01, 02, ... 04_x, 04_y, ...)."""
    found = [p for p in build_dir.glob("*.ipynb") if not p.name.endswith(SKIP_SUFFIXES)]

    def key(p: Path) -> tuple[int, str]:
        m = re.match(r"(\d+)", p.name)
        return (int(m.group(1)) if m else sys.maxsize, p.name)

    return sorted(found, key=key)


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first Markdown heading of the notebook, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            m = re.match(r"\s*#+\s+(.+)", line)
            if m:
                return m.group(1).strip()
    return fallback


def results_table_html(csv: Path) -> str:
    """The results table as HTML with floats to 3 decimals, or a note that it is not there yet."""
    if not csv.is_file():
        return f'<p class="note">No results table yet ({html.escape(str(csv))} does not exist; run <code>make evaluate</code>).</p>'
    df = pd.read_csv(csv)
    for col in df.select_dtypes("float").columns:
        # counts and sizes stored as floats because a row lacks them (image_size of the baseline) stay whole
        values = df[col].dropna()
        if len(values) and (values == values.round()).all() and (values.abs() > 1).any():
            df[col] = df[col].astype("Int64")
    return df.to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="", border=0, escape=True)


def render_notebook(path: Path, exporter) -> str:
    """One executed notebook as a self-contained HTML page."""
    nb = nbformat.read(path, as_version=4)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(path.parent), "name": path.stem}})
    return body


def _with_nav(page: str, nav: str) -> str:
    """Insert a navigation bar right after the page's ``<body ...>`` tag."""
    m = re.search(r"<body[^>]*>", page)
    if not m:
        return nav + page
    return page[: m.end()] + nav + page[m.end():]


def build_book(dataset: str, build_dir: str | Path = "build", figures_dir: str | Path = "figures") -> Path:
    """Write ``<build_dir>/<dataset>/book/`` and return the path of its ``index.html``."""
    from nbconvert import HTMLExporter

    src = Path(build_dir) / dataset
    out = src / "book"
    notebooks = executed_notebooks(src)
    if not notebooks:
        raise FileNotFoundError(f"no executed notebooks in {src}/ (run `make paper DATASET={dataset}` first)")
    out.mkdir(parents=True, exist_ok=True)

    exporter = HTMLExporter(template_name="lab")
    exporter.embed_images = True            # Markdown images inline too (outputs are data: URIs anyway)
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True

    tag = config.simulated_tag(dataset)
    pages = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        pages.append((path, f"{path.stem}.html", notebook_title(nb, path.stem)))

    written = set()
    for i, (path, page_name, title) in enumerate(pages):
        links = ['<a href="index.html">&larr; contents</a>']
        if i > 0:
            links.append(f'<a href="{pages[i - 1][1]}">previous: {html.escape(pages[i - 1][0].stem)}</a>')
        if i + 1 < len(pages):
            links.append(f'<a href="{pages[i + 1][1]}">next: {html.escape(pages[i + 1][0].stem)}</a>')
        nav = f'<nav class="sts-book-nav" style="{_NAV_STYLE}">' + " &middot; ".join(links) + "</nav>"
        page = _with_nav(render_notebook(path, exporter), nav)
        page = re.sub(r"<title>.*?</title>", f"<title>{html.escape(title + tag)}</title>", page, count=1, flags=re.S)
        write_text_atomic(out / page_name, page)
        written.add(page_name)

    items = "\n".join(
        f'<li><a href="{page_name}">{html.escape(path.stem)}</a>: {html.escape(title)}</li>'
        for path, page_name, title in pages
    )
    csv = Path(figures_dir) / dataset / "results_table.csv"
    simulated = ('<p><strong>Everything in this book is computed on the simulated demo cohort.</strong></p>'
                 if tag else "")
    index = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spike Train Scalograms: {html.escape(dataset)}{html.escape(tag)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Spike Train Scalograms &mdash; <code>{html.escape(dataset)}</code></h1>
{simulated}
<h2>Results</h2>
<p class="note">Balanced accuracy on the held-out test cells, per model (from <code>{html.escape(str(csv))}</code>).</p>
{results_table_html(csv)}
<h2>Notebooks</h2>
<p class="note">Each page is the notebook as executed by <code>make paper</code> ({html.escape(str(src))}/), with its figures.</p>
<ol>
{items}
</ol>
</body>
</html>
"""
    write_text_atomic(out / "index.html", index)
    # pages of notebooks that are gone (renamed, cleaned) would otherwise linger unlinked
    for stale in out.glob("*.html"):
        if stale.name != "index.html" and stale.name not in written:
            stale.unlink()
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sts_utils.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--build-dir", default="build", help="folder holding <dataset>/*.ipynb (default: build)")
    parser.add_argument("--figures-dir", default="figures", help="folder holding <dataset>/results_table.csv")
    args = parser.parse_args(argv)
    try:
        index = build_book(args.dataset, args.build_dir, args.figures_dir)
    except FileNotFoundError as err:
        print(f"book: {err}", file=sys.stderr)
        return 1
    print(f"book: {index} ({len(list(index.parent.glob('*.html'))) - 1} notebook pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
