"""`make book`: executed notebooks -> a Sphinx + myst-nb site with navigation, search and the results table.

The notebooks are tiny executed ones shaped like papermill's (a parameters cell, an injected-parameters
cell with absolute folders, stdout, a stderr warning naming the venv, a Markdown warning naming the
home folder, a figure); the site is built once per module and read as files, and, where a Chromium and
playwright are installed, checked by tools/check_browser.py as `make check-browser` does.
"""
import base64
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import optuna
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from optuna.trial import TrialState

from tests.conftest import in_ci
from sts_utils.data import profiles, studies
from sts_utils.pages import book

# sphinx-book-theme 1.4 uses an API Sphinx 11 will remove (a pending deprecation, not a fault of the book)
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]

# a 1x1 PNG
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2a7e6"
    "5a0000000049454e44ae426082"
)).decode()
HOME = str(Path.home())


def executed_notebook(title: str, word: str, data_dir: Path) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: parameters, injected parameters, outputs of every kind."""
    warning = (f"{sys.prefix}/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found. "
               "Please update jupyter and ipywidgets.\n")
    nb = new_notebook(cells=[
        new_markdown_cell(f"# {title}\n\nSome *prose* about {word}."),
        new_code_cell("DATASET = 'demo'\nDATA_DIR = None", metadata={"tags": ["parameters"]}, execution_count=1),
        new_code_cell(f'# Parameters\nDATASET = "demo"\nDATA_DIR = "{data_dir}"',
                      metadata={"tags": ["injected-parameters"]}, execution_count=2),
        new_code_cell("plot()", execution_count=3, outputs=[
            new_output("stream", name="stderr", text=warning),
            new_output("stream", name="stdout", text=f"{word} done\n"),
            new_output("display_data", data={
                "text/markdown": f"> **Warning:** weights not found at {HOME}/.cache/torch/hub/checkpoints/x.pth",
                "text/plain": "<IPython.core.display.Markdown object>"}),
            new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure size 100x100>"}),
        ]),
    ])
    nb.metadata["kernelspec"] = {"name": "sts", "display_name": "Python (sts)", "language": "python"}
    nb.metadata["papermill"] = {"input_path": str(ROOT / "notebooks" / "x.py"), "output_path": str(data_dir)}
    return nb


RESULTS = pd.DataFrame({
    "model": ["resnet18", "lightgbm"], "balanced_accuracy": [0.812345, 0.7], "ci_low": [0.71234, 0.6019],
    "ci_high": [0.9, 0.8], "n_repeats": [1, 1], "scored_on": ["repeat 0", "repeat 0"],
    **{f"recall_{c}": [0.5, 0.75] for c in ("Pvalb", "Sst", "Vip/Lamp5", "Excitatory")},
    "weights": ["random", "n/a"], "image_size": ["64", "n/a"], "note": ["", "LightGBM on 33 features (all)"],
})


def make_build(root: Path, with_results: bool = True) -> tuple[Path, Path, Path]:
    build, figures, data = root / "build", root / "figures", root / "data"
    (build / "demo").mkdir(parents=True)
    (figures / "demo").mkdir(parents=True)
    # written out of order, two sharing a title (the runs of notebook 04): the book sorts and tells them apart
    notebooks = {"10_later": ("10 — Later", "zeppelins"), "02_scalograms": ("02 — Scalograms", "wavelets"),
                 "04_finetune_resnet18": ("04 — Fine-tuning", "resnets"),
                 "04_finetune_densenet121": ("04 — Fine-tuning", "densenets")}
    for stem, (title, word) in notebooks.items():
        nbformat.write(executed_notebook(title, word, data), build / "demo" / f"{stem}.ipynb")
    for skipped in ("03_splitting.failed.ipynb", "05_baseline.part.ipynb", "07_saliency.source.ipynb"):
        nbformat.write(executed_notebook("skipped", "skipped", data), build / "demo" / skipped)
    if with_results:
        RESULTS.to_csv(figures / "demo" / "results_table.csv", index=False)
    return build, figures, data


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    build, figures, data = make_build(tmp_path_factory.mktemp("book"))
    before = (build / "demo" / "02_scalograms.ipynb").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        err = []
        mp.setattr(sys, "stderr", type("Err", (), {"write": lambda self, s: err.append(s), "flush": lambda self: 0})())
        assert book.main(["--dataset", "demo", "--build-dir", str(build), "--figures-dir", str(figures),
                          "--data-dir", str(data)]) == 0
    assert "stderr outputs (warnings) not shown on 02_scalograms, 04_finetune_densenet121" in "".join(err)
    assert (build / "demo" / "02_scalograms.ipynb").read_bytes() == before, "the executed notebook was changed"
    return build / "demo" / "book", data


PAGES = ["02_scalograms.html", "04_finetune_densenet121.html", "04_finetune_resnet18.html", "10_later.html"]


def test_index_lists_the_pages_in_numeric_order_with_the_results(site):
    out, _ = site
    assert [p.name for p in book.notebook_pages(out)] == PAGES       # skipped notebooks left out
    index = (out / "index.html").read_text()
    toc = index.split('class="toctree-wrapper', 1)[1].split("</div>", 1)[0]
    assert re.findall(r'href="(\d\d_\w+\.html)"', toc) == PAGES
    assert "04 — Fine-tuning (densenet121)" in index and "04 — Fine-tuning (resnet18)" in index
    assert "0.812 (0.712–0.900)" in index and "0.700 (0.602–0.800)" in index   # README's form, 3 decimals
    assert "0.812345" not in index
    assert "SIMULATED" in index and "simulated demo cohort" in index


def test_every_page_has_the_sidebar_and_its_figure_as_a_file(site):
    out, _ = site
    for name in PAGES:
        page = (out / name).read_text()
        assert all(f'href="{other}"' in page for other in PAGES if other != name), f"{name}: sidebar incomplete"
        assert "<em>prose</em>" in page                               # Markdown cells rendered
        assert "done" in page                                         # stdout kept
        images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
        assert images, f"{name}: no figure"
        assert all((out / src).read_bytes().startswith(b"\x89PNG") for src in images)


def test_no_stderr_and_no_machine_paths_on_any_page(site):
    out, data = site
    for path in out.glob("*.html"):
        page = path.read_text()
        assert "TqdmWarning" not in page and "stderr" not in page, f"{path.name}: a stderr output is shown"
        for folder in (HOME, str(data), sys.prefix, str(ROOT)):
            assert not re.search(re.escape(folder) + r"(?![\w.-])", page), f"{path.name} shows {folder}"
    page = (out / "02_scalograms.html").read_text()
    assert "~/.cache/torch/hub/checkpoints/x.pth" in page             # written as the reader knows it
    assert "DATA_DIR" in page and "data" in page


def test_search_index_finds_each_page_by_its_words(site):
    out, _ = site
    assert (out / "search.html").is_file()
    index = json.loads(re.search(r"Search\.setIndex\((.*)\)\s*$", (out / "searchindex.js").read_text(), re.S).group(1))
    docnames = index["docnames"]
    for word, doc in (("zeppelin", "10_later"), ("wavelet", "02_scalograms"), ("densenet", "04_finetune_densenet121")):
        hits = index["terms"][word]
        hits = hits if isinstance(hits, list) else [hits]
        assert doc in {docnames[i] for i in hits}, word


def test_a_rebuild_drops_pages_of_gone_notebooks_and_says_when_no_results(tmp_path):
    build, figures, data = make_build(tmp_path, with_results=False)
    for stem in ("10_later", "04_finetune_resnet18", "04_finetune_densenet121"):
        (build / "demo" / f"{stem}.ipynb").unlink()
    stale = build / "demo" / "book" / "09_gone.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    index = book.build_book("demo", build, figures, data)
    text = re.sub(r"<[^>]+>", "", index.read_text())        # Sphinx puts each word of a literal in a <span>
    assert "No results table yet" in text and "make evaluate DATASET=demo" in text
    assert [p.name for p in book.notebook_pages(index.parent)] == ["02_scalograms.html"]
    assert not any(p.name.startswith(".book-") for p in (build / "demo").iterdir()), "temporary folder left"


def test_book_without_notebooks_fails_with_one_line(tmp_path, capsys):
    assert book.main(["--dataset", "demo", "--build-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "make paper DATASET=demo" in err and len(err.strip().splitlines()) == 1


def test_paths_are_shown_short_only_as_whole_path_parts():
    shown_as = (("/srv/x/data", "data"), ("/srv/x", "."))
    assert book.show_paths("/srv/x/data/demo and /srv/x/notebooks, /srv/xy/z", shown_as) == \
        "data/demo and ./notebooks, /srv/xy/z"


def test_titles_shared_by_notebooks_get_what_tells_them_apart():
    assert book.page_titles({"01_a": "A", "04_finetune_resnet18": "F", "04_finetune_inception_v3": "F"}) == \
        {"01_a": "A", "04_finetune_resnet18": "F (resnet18)", "04_finetune_inception_v3": "F (inception_v3)"}


def load_check_browser():
    spec = importlib.util.spec_from_file_location("check_browser", ROOT / "tools" / "check_browser.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def browser():
    check = load_check_browser()
    path = check.find_browser(None)
    playwright = pytest.importorskip("playwright.sync_api")
    if path is None:
        if in_ci():
            pytest.fail("no system Chromium, but CI is set: the browser tests must run (.ci/run installs it)")
        pytest.skip("no system Chromium (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=check.CHROMIUM_ARGS)
        yield check, b
        b.close()


def test_the_browser_check_passes_the_book_and_catches_a_machine_path(site, browser, tmp_path):
    check, b = browser
    out, _ = site
    line = check.check_book(b, out, None, 30_000)
    assert "index + 4 notebook pages" in line and "4 images decode" in line and "0 internet requests" in line
    assert "search for 'scalograms' finds 02_scalograms.html" in line

    leaky = tmp_path / "build" / "demo" / "book"
    shutil.copytree(out, leaky)
    page = leaky / "10_later.html"
    page.write_text(page.read_text().replace("zeppelins done", f"zeppelins done in {HOME}/.cache/x"))
    with pytest.raises(check.CheckFailed, match=r"10_later.html: a machine path"):
        check.check_book(b, leaky, None, 30_000)


# ------------------------------------------------- tools/check_browser.py's optuna-dashboard check, its parts
def test_the_dashboard_checks_study_is_a_finished_search_in_the_default_journal(tmp_path):
    check = load_check_browser()
    storage, study = check.small_finished_study(tmp_path / "data", n_trials=3)
    assert storage == studies.default_storage("demo", "resnet18", tmp_path / "data")
    assert storage == str(tmp_path / "data" / "demo" / "models" / "resnet18" / "study.journal")
    reloaded = optuna.load_study(study_name=check.DASHBOARD_STUDY, storage=studies.open_storage(storage))
    assert [t.state for t in reloaded.trials] == [TrialState.COMPLETE] * 3
    assert all(set(t.params) == set(profiles.SPACES["compendium"]) for t in reloaded.trials)
    assert [t.value for t in reloaded.trials] == [t.value for t in study.trials]
    assert len({t.value for t in reloaded.trials}) == 3  # the objective depends on the parameters
    assert all(t.user_attrs["host"] and t.user_attrs["worker"] == 0 for t in reloaded.trials)  # the worker's attributes


def dashboard_text(trials, states=None, value=None, drop_param=None) -> str:
    """The text of optuna-dashboard 0.21's trial list page (document.body.innerText), trial 0 selected."""
    states = states or ["Complete"] * len(trials)
    listed = "\n".join(f"Trial {t.number}\n{s}" for t, s in zip(trials, states))
    params = "\n\n".join(f"{k} {v}" for k, v in trials[0].params.items() if k != drop_param)
    return (f"watched (id=0)\nHistory\nAnalytics\nTrials (List)\nSmart Selection\nNote\nLive Update\nSettings\n"
            f"Dark Mode\nSend Feedback\n\n{len(trials)} Trials\n\n{listed}\nTrial 0 (trial_id=0)\n{states[0]}\nNote\n\n"
            f"Value\n\n{trials[0].value if value is None else value}\n\nIntermediate Values\n\nParameter\n\n{params}\n\n"
            "Started At\n\nThu Dec 03 2026 18:05:36 GMT+0000 (Coordinated Universal Time)\n\nUser Attributes\n\nhost vm")


def test_the_dashboard_check_reads_every_trial_its_state_and_the_first_ones_value(tmp_path):
    check = load_check_browser()
    _, study = check.small_finished_study(tmp_path / "data", n_trials=3)
    trials = study.trials
    assert check.trial_list_problem(dashboard_text(trials), trials) is None
    assert "numbers [0, 1], not the study's 3 ([0, 1, 2])" in check.trial_list_problem(
        dashboard_text(trials[:2]), trials)
    assert "{1: 'Fail'}" in check.trial_list_problem(dashboard_text(trials, ["Complete", "Fail", "Complete"]), trials)
    assert "value as 0.5" in check.trial_list_problem(dashboard_text(trials, value=0.5), trials)
    assert check.trial_list_problem(dashboard_text(trials, drop_param="lr"), trials).endswith("parameters lr")
