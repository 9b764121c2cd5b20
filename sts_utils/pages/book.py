"""The executed notebooks as a web book: ``build/<dataset>/*.ipynb`` -> ``build/<dataset>/book/``.

``make book [DATASET=demo]`` (or ``python -m sts_utils.pages.book --dataset demo [--build-dir build]
[--figures-dir figures] [--data-dir data]``) builds, with Sphinx and myst-nb, a static site whose

* ``index.html`` shows the dataset's results table (README's form of
  ``figures/<dataset>/results_table.csv``, when it exists) and the notebook pages in numeric order;
* ``NN_name.html`` pages are the *executed* notebooks as they are (myst-nb with execution off: nothing
  is re-run), with a sidebar linking every page and Sphinx's full-text search (``search.html``), which
  works from disk; figures are PNG files next to the pages, so the folder opens offline or on any host.

What the pages show is cleaned on the way in, on a copy (the executed notebooks stay as papermill wrote
them): absolute folders of this machine (the project, the data/figures/build folders, the virtual
environment, the home folder) are written as the project-relative names a reader knows, and stderr
streams (library warnings) are left out by myst-nb; the build names the pages that had some.

Presentation layer: it imports ``config``, ``io`` and ``report`` (the results table's form) from the
package. The Sphinx source folder (``conf.py``, ``index.md``, the cleaned notebooks) is written to a
temporary folder and the site is renamed into place whole, so no page of an older build lingers.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
from sphinx.cmd.build import build_main

from sts_utils.core import config
from sts_utils.core.io import write_text_atomic
from sts_utils.pages.report import results_markdown

#: executed-notebook names that are not finished results (papermill partials, failures, sources)
SKIP_SUFFIXES = (".failed.ipynb", ".part.ipynb", ".source.ipynb")

#: the theme: sidebar navigation and search; its fonts and icons are files of the installed package
THEME = "sphinx_book_theme"

#: pages Sphinx writes besides the notebooks
SPHINX_PAGES = frozenset({"index.html", "search.html", "genindex.html", "py-modindex.html"})

_HEADING = re.compile(r"^(\s*#+\s+)(.+)$", re.M)


@dataclass(frozen=True)
class BookPaths:
    """Every folder the book reads or writes, resolved once (absolute)."""

    dataset: str
    notebooks: Path      #: ``<build_dir>/<dataset>/``: the executed notebooks
    out: Path            #: ``<build_dir>/<dataset>/book/``: the site
    results_csv: Path    #: ``<figures_dir>/<dataset>/results_table.csv``
    #: (absolute prefix, what a page shows instead), longest first
    shown_as: tuple[tuple[str, str], ...]

    @classmethod
    def resolve(cls, dataset: str, build_dir: str | os.PathLike = "build",
                figures_dir: str | os.PathLike = "figures", data_dir: str | os.PathLike | None = None) -> BookPaths:
        """The book's folders for ``dataset`` (relative folders are taken from the working directory)."""
        build, figures = Path(build_dir).resolve(), Path(figures_dir).resolve()
        data = config.get_data_dir(data_dir).resolve()
        names = {
            str(build): "build", str(figures): "figures", str(data): "data",
            str(config.project_root()): ".", sys.prefix: ".venv", str(Path.home()): "~",
        }
        # the unresolved spellings too (a symlinked venv or home is printed as it was reached)
        names.setdefault(str(Path(sys.prefix).resolve()), ".venv")
        names.setdefault(str(Path.home().resolve()), "~")
        shown_as = tuple(sorted(((k, v) for k, v in names.items() if len(k) > 1), key=lambda kv: -len(kv[0])))
        return cls(dataset=dataset, notebooks=build / dataset, out=build / dataset / "book",
                   results_csv=figures / dataset / "results_table.csv", shown_as=shown_as)


def executed_notebooks(folder: Path) -> list[Path]:
    """The finished executed notebooks in ``folder``, in numeric order (01, 02, ... 04_x, 04_y, ...)."""
    found = [p for p in folder.glob("*.ipynb") if not p.name.endswith(SKIP_SUFFIXES)]

    def key(p: Path) -> tuple[int, str]:
        m = re.match(r"(\d+)", p.name)
        return (int(m.group(1)) if m else sys.maxsize, p.name)

    return sorted(found, key=key)


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first Markdown heading of the notebook, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = _HEADING.search(cell.source)
            if m:
                return m.group(2).strip()
    return fallback


def page_titles(titles: dict[str, str]) -> dict[str, str]:
    """Page titles by notebook stem, where notebooks sharing a title get what tells them apart.

    The four runs of notebook 04 all open with "04 — Fine-tuning a backbone"; in the sidebar and the
    search results they become "... (resnet18)", "... (densenet121)": the part of each stem after the
    group's common prefix.
    """
    out = dict(titles)
    for title in set(titles.values()):
        stems = [s for s, t in titles.items() if t == title]
        if len(stems) > 1:
            common = os.path.commonprefix(stems)
            for stem in stems:
                out[stem] = f"{title} ({stem[len(common):].strip('_') or stem})"
    return out


def show_paths(text: str, shown_as: tuple[tuple[str, str], ...]) -> str:
    """``text`` with each absolute folder of ``shown_as`` written as its short name (whole path parts only)."""
    for prefix, name in shown_as:
        text = re.sub(re.escape(prefix) + r"(?![\w.-])", name, text)
    return text


def _clean_output(output: nbformat.NotebookNode, shown_as: tuple[tuple[str, str], ...]) -> None:
    """Machine folders out of one output's text (never its images: base64 could hold such a string)."""
    if output.get("output_type") == "stream":
        output["text"] = show_paths(output.get("text", ""), shown_as)
    elif output.get("output_type") == "error":
        output["evalue"] = show_paths(output.get("evalue", ""), shown_as)
        output["traceback"] = [show_paths(line, shown_as) for line in output.get("traceback", [])]
    for mime, value in output.get("data", {}).items():
        textual = mime.startswith("text/") or mime.endswith(("+json", "/json", "javascript")) or mime == "image/svg+xml"
        if textual and isinstance(value, str):
            output["data"][mime] = show_paths(value, shown_as)


def prepare_notebook(nb: nbformat.NotebookNode, title: str, shown_as: tuple[tuple[str, str], ...]
                     ) -> nbformat.NotebookNode:
    """A copy of an executed notebook as its page shows it: ``title`` as first heading, no machine folders."""
    nb = nbformat.from_dict(nb)          # a deep copy: the executed notebook is never touched
    retitled = False
    for cell in nb.cells:
        cell.source = show_paths(cell.source, shown_as)
        if cell.cell_type == "markdown" and not retitled and _HEADING.search(cell.source):
            cell.source = _HEADING.sub(lambda m: m.group(1) + title, cell.source, count=1)
            retitled = True
        for output in cell.get("outputs", []):
            _clean_output(output, shown_as)
    if not retitled:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}"))
    # papermill's record of the run holds absolute paths and is not shown anywhere
    nb.metadata.pop("papermill", None)
    return nb


def stderr_outputs(nb: nbformat.NotebookNode) -> int:
    """How many stderr streams the notebook's outputs hold."""
    return sum(o.get("output_type") == "stream" and o.get("name") == "stderr"
               for cell in nb.cells for o in cell.get("outputs", []))


def results_section(csv: Path, dataset: str) -> str:
    """The index's results section (MyST Markdown): README's form of the table, or why it is not there."""
    shown = f"figures/{dataset}/results_table.csv"
    if not csv.is_file():
        return f"No results table yet (`{shown}` does not exist; run `make evaluate DATASET={dataset}`).\n"
    return (f"Balanced accuracy on the held-out test cells, per model, with the recall of each class "
            f"(`{shown}`).\n\n{results_markdown(pd.read_csv(csv))}")


def index_page(paths: BookPaths, pages: list[tuple[str, str]]) -> str:
    """``index.md``: the title, the results table and the table of contents (every page, numeric order)."""
    tag = config.simulated_tag(paths.dataset)
    simulated = ("**Everything in this book is computed on the simulated demo cohort: the numbers show that "
                 "the pipeline runs, not how well real neurons are classified.**\n\n" if tag else "")
    entries = "\n".join(f"{title} <{stem}>" for stem, title in pages)
    return f"""# Spike Train Scalograms: `{paths.dataset}`{tag}

{simulated}## Results

{results_section(paths.results_csv, paths.dataset)}
## Notebooks

Each page is a notebook as `make paper` executed it (`build/{paths.dataset}/`), with its outputs and figures;
nothing is re-run to build this book.

```{{toctree}}
:maxdepth: 1

{entries}
```
"""


def sphinx_settings(dataset: str) -> dict[str, Any]:
    """The Sphinx configuration of the book (written as ``conf.py``)."""
    return {
        "project": "Spike Train Scalograms",
        "author": "STS compendium contributors",
        "html_title": f"Spike Train Scalograms: {dataset}{config.simulated_tag(dataset)}",
        "extensions": ["myst_nb"],
        "language": "en",
        # the executed notebooks are the results: render them as they are, never run them again
        "nb_execution_mode": "off",
        # stderr holds library warnings (a TqdmWarning with the venv's path, say), not results; build_book
        # names the pages that had some
        "nb_output_stderr": "remove",
        "nb_merge_streams": True,
        # no CDN scripts for Jupyter widgets (myst-nb's default): the pages have none, and the book is offline
        "nb_ipywidgets_js": {},
        "html_theme": THEME,
        # no links to a repository or launch buttons (the book is read from disk), no copies of the sources
        "html_theme_options": {"use_download_button": False, "use_fullscreen_button": False,
                               "show_toc_level": 2, "home_page_in_toc": True},
        "html_copy_source": False,
        # a result's summary is fetched from its page, which a browser refuses for file:// pages; the results
        # themselves come from searchindex.js, a script, and work from disk
        "html_show_search_summary": False,
        "html_show_sourcelink": False,
        "html_last_updated_fmt": None,
        "exclude_patterns": ["_build", "jupyter_execute"],
    }


def conf_py(settings: dict[str, Any]) -> str:
    """``conf.py`` holding ``settings`` (every value a Python literal)."""
    lines = [f"{name} = {value!r}" for name, value in settings.items()]
    return "# written by sts_utils.pages.book for one build; edit sphinx_settings() instead\n" + "\n".join(lines) + "\n"


def build_book(dataset: str, build_dir: str | os.PathLike = "build", figures_dir: str | os.PathLike = "figures",
               data_dir: str | os.PathLike | None = None, verbose: bool = False) -> Path:
    """Build ``<build_dir>/<dataset>/book/`` and return the path of its ``index.html``.

    Parameters
    ----------
    dataset : str
        The dataset whose executed notebooks (``<build_dir>/<dataset>/*.ipynb``) make the book.
    build_dir, figures_dir, data_dir : path-like
        The folders ``make`` passes (``data_dir`` only so that a page naming it shows ``data``).
    verbose : bool
        Sphinx's progress on the terminal (warnings are always shown).

    Returns
    -------
    Path
        ``<build_dir>/<dataset>/book/index.html``.

    Raises
    ------
    FileNotFoundError
        No executed notebook in ``<build_dir>/<dataset>/``.
    RuntimeError
        Sphinx failed (its messages are on stderr).
    """
    paths = BookPaths.resolve(dataset, build_dir, figures_dir, data_dir)
    notebooks = executed_notebooks(paths.notebooks)
    if not notebooks:
        raise FileNotFoundError(f"no executed notebooks in {paths.notebooks}/ "
                                f"(run `make paper DATASET={dataset}` first)")
    executed = {p.stem: nbformat.read(p, as_version=4) for p in notebooks}
    titles = page_titles({stem: notebook_title(nb, stem) for stem, nb in executed.items()})
    with_stderr = [stem for stem, nb in executed.items() if stderr_outputs(nb)]
    if with_stderr:
        print(f"book: stderr outputs (warnings) not shown on {', '.join(with_stderr)}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix=".book-", dir=paths.notebooks) as tmp:
        src, site = Path(tmp) / "src", Path(tmp) / "html"
        src.mkdir()
        for stem, nb in executed.items():
            nbformat.write(prepare_notebook(nb, titles[stem], paths.shown_as), src / f"{stem}.ipynb")
        write_text_atomic(src / "index.md", index_page(paths, [(stem, titles[stem]) for stem in executed]))
        write_text_atomic(src / "conf.py", conf_py(sphinx_settings(dataset)))
        args = ["-b", "html", "-d", str(Path(tmp) / "doctrees"), str(src), str(site)]
        if build_main(args if verbose else ["-q", *args]) != 0:
            raise RuntimeError(f"sphinx-build failed on the notebooks of {paths.notebooks}/ (messages above)")
        # the whole site replaces the old one, so pages of notebooks that are gone do not linger
        shutil.rmtree(paths.out, ignore_errors=True)
        site.rename(paths.out)
    return paths.out / "index.html"


def notebook_pages(book: Path) -> list[Path]:
    """The notebook pages of a built book (every HTML page at its top level but Sphinx's own)."""
    return sorted(p for p in book.glob("*.html") if p.name not in SPHINX_PAGES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sts_utils.pages.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--build-dir", default="build", help="folder holding <dataset>/*.ipynb (default: build)")
    parser.add_argument("--figures-dir", default="figures", help="folder holding <dataset>/results_table.csv")
    parser.add_argument("--data-dir", default=None, help="the data folder (default: $STS_DATA_DIR, else data)")
    parser.add_argument("--verbose", action="store_true", help="Sphinx's progress messages")
    args = parser.parse_args(argv)
    try:
        index = build_book(args.dataset, args.build_dir, args.figures_dir, args.data_dir, verbose=args.verbose)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"book: {err}", file=sys.stderr)
        return 1
    print(f"book: {index} ({len(notebook_pages(index.parent))} notebook pages, search in search.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
