#!/usr/bin/env python3
"""Check the web book and JupyterLab in a real browser (``make check-browser [DATASET=demo]``).

Drives the system Chromium (Debian package ``chromium``: ``apt-get install chromium``) with
playwright-python (``pip install -e '.[browser]'``); it never downloads a browser.

(a) book (Sphinx + myst-nb, ``make book``): every page of ``build/<dataset>/book/`` loads from
    disk, the contents page links every notebook page, every ``<img>`` decodes, no page shows a
    stderr box or an absolute folder of this machine (project, book, venv, home, temporary folders),
    and the search page, from disk, finds the first notebook page by a word of its title. Requests to
    the internet are blocked and any one fails the check: the book must render offline.
(b) JupyterLab: starts ``jupyter lab`` on ``notebooks/`` (free port, random token, ``--allow-root``
    as root, throw-away user settings with autosave off and a throw-away workspace, so nothing is
    saved into the sources), opens ``lab/tree/02_scalograms.py`` and asserts it opens as a notebook
    (a notebook panel with code cells, not a text editor) on the ``Python (sts)`` kernel, that the
    kernel starts, and that the notebook Lab holds would be written back byte-identical by jupytext
    (what an unedited save does).
(c) optuna-dashboard: a small finished study (:data:`DASHBOARD_TRIALS` COMPLETE trials of a tiny objective
    over the compendium's search space, run by ``sts_utils.studies.run_worker`` into the journal file that
    ``make search`` uses by default, in a temporary data folder), served by the lock's
    ``optuna-dashboard <journal>`` on a free port of 127.0.0.1; its home page lists the study, and the study's
    trial list shows every trial as Complete, with trial 0's value and parameters. No request may leave
    127.0.0.1 and no script error may occur.

Screenshots for a human go to ``build/<dataset>/browser/``. Exit 0 when all is well; otherwise one
line saying why and exit 1 (2: no browser or no playwright).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna

from sts_utils.data import profiles, studies
from sts_utils.pages.book import notebook_pages

ROOT = Path(__file__).resolve().parents[1]
BROWSER_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LAB_NOTEBOOK = "02_scalograms.py"
KERNEL_DISPLAY_NAME = "Python (sts)"
CHECKS = ("book", "lab", "dashboard")
DASHBOARD_STUDY = "check-browser-demo-resnet18"
DASHBOARD_TRIALS = 4


class CheckFailed(Exception):
    """One line saying what is wrong."""


def find_browser(explicit: str | None) -> str | None:
    explicit = explicit or os.environ.get("STS_CHROMIUM")
    for candidate in [explicit] if explicit else BROWSER_CANDIDATES:
        if not candidate:
            continue
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def block_internet(page, blocked: list[str]) -> None:
    """Abort every request that is not a file or the local Lab server (CDN scripts, fonts)."""
    def handle(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "http://127.0.0.1", "ws://127.0.0.1")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()
    page.route("**/*", handle)


# ------------------------------------------------------------------------------------------- the book
# absolute folders of a machine as a page could show them (a home, a temporary folder), whole path parts only
GENERIC_MACHINE_PATH = r"(?:/root|/home/[\w.-]+|/Users/[\w.-]+|/tmp|/var/folders)(?=/)"
# every <img> of the page, loaded eagerly and decoded (false for one that is broken)
DECODE_IMAGES = """async () => Promise.all(Array.from(document.images).map(async i => {
    i.loading = 'eager';
    try { await i.decode(); } catch (e) { }
    return {src: (i.getAttribute('src') || '').slice(0, 60), ok: i.complete && i.naturalWidth > 0};
}))"""


def machine_path_pattern(book: Path) -> re.Pattern:
    """Absolute folders of this machine that no page may show: the project, the book's own folder, the
    Python environment, the home folder, and any home or temporary folder."""
    folders = {str(ROOT), str(book.parent.parent), sys.prefix, str(Path(sys.prefix).resolve()), str(Path.home())}
    named = "|".join(re.escape(f) for f in sorted(folders, key=len, reverse=True) if len(f) > 1)
    return re.compile(rf"(?<![\w.~-])(?:{named}|{GENERIC_MACHINE_PATH})(?![\w-])")


def page_problems(page, name: str, paths: re.Pattern) -> list[str]:
    """What is wrong with the page shown: stderr boxes, machine paths (outside data: URIs)."""
    problems = []
    n_stderr = page.eval_on_selector_all(".output.stderr, .stderr, .jp-RenderedText[data-mime-type*=stderr]",
                                         "els => els.length")
    if n_stderr:
        problems.append(f"{name}: {n_stderr} stderr output boxes")
    markup = re.sub(r"data:[^\"')\s]+", "data:", page.content())
    found = paths.search(markup)
    if found:
        around = markup[max(0, found.start() - 40):found.end() + 40].replace("\n", " ")
        problems.append(f"{name}: a machine path {found.group(0)!r} (...{around}...)")
    return problems


def search_word(page) -> str:
    """A word of the page shown's title that the search must find the page by (the longest one)."""
    title = page.eval_on_selector("main h1, article h1, h1", "e => e.textContent")
    words = sorted(re.findall(r"[A-Za-z]{4,}", title), key=len, reverse=True)
    if not words:
        raise CheckFailed(f"no word to search for in the title {title!r}")
    return words[0].lower()


def check_search(page, book: Path, target: Path, word: str, timeout_ms: int) -> int:
    """Sphinx's search page, from disk, finds ``target`` by ``word``; the number of pages it lists."""
    page.goto(f"{(book / 'search.html').as_uri()}?q={word}", wait_until="load", timeout=timeout_ms)
    try:
        page.wait_for_function(
            "() => { const s = document.querySelector('#search-results');"
            " return s && (s.querySelectorAll('li a').length > 0 || /finished|not match|no results/i.test(s.textContent)); }",
            timeout=timeout_ms)
    except Exception:
        raise CheckFailed(f"search.html?q={word}: the search did not finish (does searchindex.js load from disk?)"
                          ) from None
    hrefs = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.getAttribute('href'))")
    if not any(h.split("?")[0].split("#")[0] == target.name for h in hrefs):
        raise CheckFailed(f"search.html?q={word} lists {len(hrefs)} pages, not {target.name} (whose title has it)")
    return len(hrefs)


def check_book(browser, book: Path, shots: Path | None, timeout_ms: int) -> str:
    index = book / "index.html"
    if not index.is_file():
        raise CheckFailed(f"no {index} (run `make book` first)")
    pages = notebook_pages(book)
    if not pages:
        raise CheckFailed(f"{book} has an index but no notebook pages")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked: list[str] = []
    block_internet(page, blocked)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    paths = machine_path_pattern(book)

    page.goto(index.as_uri(), wait_until="load", timeout=timeout_ms)
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href').split('#')[0])")
    missing = [p.name for p in pages if p.name not in hrefs]
    if missing:
        raise CheckFailed(f"index.html does not link {', '.join(missing)}")
    problems = page_problems(page, "index.html", paths)
    if shots:
        page.screenshot(path=str(shots / "book_index.png"), full_page=True)

    n_images, word = 0, None
    for p in pages:
        response = page.goto(p.as_uri(), wait_until="load", timeout=timeout_ms)
        if response is not None and not response.ok:
            raise CheckFailed(f"{p.name} did not load ({response.status})")
        if not page.query_selector(".cell, .cell_output"):
            raise CheckFailed(f"{p.name}: no notebook cells rendered")
        images = page.evaluate(DECODE_IMAGES)
        broken = [i["src"] for i in images if not i["ok"]]
        if broken:
            raise CheckFailed(f"{p.name}: {len(broken)} of {len(images)} images did not render (first: {broken[0]})")
        n_images += len(images)
        problems += page_problems(page, p.name, paths)
        word = word or search_word(page)
        if shots:
            page.screenshot(path=str(shots / f"book_{p.stem}.png"), full_page=False)
    if problems:
        raise CheckFailed(f"{len(problems)} problems; first: {problems[0]}")
    n_found = check_search(page, book, pages[0], word, timeout_ms)
    if shots:
        page.screenshot(path=str(shots / "book_search.png"), full_page=False)
    page.close()
    if blocked:
        raise CheckFailed(f"the book asked the internet for {len(blocked)} resources (first: {blocked[0]})")
    if errors:
        raise CheckFailed(f"{len(errors)} script errors in the book (first: {errors[0]})")
    return (f"book: index + {len(pages)} notebook pages load from disk, {n_images} images decode, no stderr box "
            f"or machine path; search for {word!r} finds {pages[0].name} ({n_found} pages); "
            f"0 internet requests")


# ---------------------------------------------------------------------------------------- JupyterLab
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(notebooks: Path, tmp: Path, log_path: Path) -> tuple[subprocess.Popen, str, str]:
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp / "user-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={notebooks}",
           f"--LabApp.user_settings_dir={tmp / 'user-settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    proc, base = start_server(cmd, port, f"/api/status?token={token}", "jupyter lab", log_path, ROOT)
    return proc, base, token


def start_server(cmd: list[str], port: int, ready: str, what: str, log_path: Path, cwd: Path
                 ) -> tuple[subprocess.Popen, str]:
    """Start ``cmd`` (a server on ``port`` of 127.0.0.1, its output to ``log_path``) and wait until ``ready``, a
    path on it, answers 200; ``what`` names the server in the one line of a failure. Returns it and its base URL."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    timeout_s = 120
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"{what} exited with {proc.returncode} (log: {log_path})")
        try:
            with urllib.request.urlopen(f"{base}{ready}", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise CheckFailed(f"{what} did not answer within {timeout_s} s (log: {log_path})")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def check_save_round_trip(nb_json: dict, source: Path) -> None:
    """The notebook as Lab holds it, written by jupytext as the contents manager does, equals the file."""
    import jupytext
    import nbformat
    from jupytext.config import load_jupytext_config

    nb = nbformat.from_dict(nb_json)
    text = jupytext.writes(nb, fmt="py:percent", config=load_jupytext_config(str(source)))
    original = source.read_text(encoding="utf-8")
    if text != original:
        import difflib
        a, b = original.splitlines(), text.splitlines()
        tag, i1, i2, j1, j2 = next(op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
                                   if op[0] != "equal")
        raise CheckFailed(f"saving {source.name} from Lab would change it at line {i1 + 1}: "
                          f"{a[i1:i2][:2]} -> {b[j1:j2][:2]} (run tests/test_notebook_sources.py)")


def check_lab(browser, notebooks: Path, shots: Path | None, log_path: Path, timeout_ms: int) -> str:
    with tempfile.TemporaryDirectory(prefix="sts-lab-check-") as tmp:
        proc, base, token = start_lab(notebooks, Path(tmp), log_path)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            block_internet(page, [])
            page.goto(f"{base}/lab/tree/{LAB_NOTEBOOK}?token={token}", wait_until="domcontentloaded", timeout=timeout_ms)
            try:
                # the widget Lab shows for the file is a notebook panel with code cells (Lab 4 renders only
                # the cells in view, so ask the app rather than count DOM nodes)
                page.wait_for_function(
                    "path => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                    " return !!(w && w.context && w.context.path === path"
                    " && w.node.classList.contains('jp-NotebookPanel') && w.node.querySelector('.jp-CodeCell')); }",
                    arg=LAB_NOTEBOOK, timeout=timeout_ms)
            except Exception:
                if shots:
                    page.screenshot(path=str(shots / "lab_failed.png"))
                editor = page.query_selector(".jp-FileEditor, .jp-FileEditorCodeWrapper")
                raise CheckFailed(f"{LAB_NOTEBOOK} opened as {'a text editor' if editor else 'no notebook'} in "
                                  f"JupyterLab, not as a notebook (is jupytext's default viewer set? `make env`)"
                                  ) from None
            # the kernel the toolbar shows, once the session is up
            try:
                page.wait_for_function(
                    "name => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-KernelName, "
                    ".jp-NotebookPanel .jp-Toolbar-kernelName')).some(e => e.textContent.trim() === name)",
                    arg=KERNEL_DISPLAY_NAME, timeout=timeout_ms)
            except Exception:
                shown = page.eval_on_selector_all(
                    ".jp-NotebookPanel .jp-KernelName, .jp-NotebookPanel .jp-Toolbar-kernelName",
                    "els => els.map(e => e.textContent.trim())")
                raise CheckFailed(f"kernel shown for {LAB_NOTEBOOK} is {shown or 'none'}, not {KERNEL_DISPLAY_NAME!r}"
                                  ) from None
            # ... and that it starts (the status bar goes from Starting/Unknown to Idle)
            try:
                page.wait_for_function(
                    "() => { const w = window.jupyterapp.shell.currentWidget;"
                    " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                    " return k && k.status === 'idle'; }", timeout=max(timeout_ms, 120_000))
            except Exception:
                raise CheckFailed(f"the {KERNEL_DISPLAY_NAME} kernel did not start (see {log_path})") from None
            if shots:
                page.wait_for_timeout(500)
                page.screenshot(path=str(shots / "lab_02_scalograms.png"))
            # what an unedited save would send to the server
            nb_json = page.evaluate(
                "() => { const w = window.jupyterapp.shell.currentWidget; return w.context.model.toJSON(); }")
            n_code = sum(c["cell_type"] == "code" for c in nb_json["cells"])
            check_save_round_trip(nb_json, notebooks / LAB_NOTEBOOK)
            page.close()
        finally:
            stop_server(proc)
    return (f"lab: {LAB_NOTEBOOK} opens as a notebook ({n_code} code cells) on {KERNEL_DISPLAY_NAME}; "
            f"an unedited save leaves it byte-identical")


# ----------------------------------------------------------------------------------- optuna-dashboard
def small_finished_study(data_dir: Path, n_trials: int = DASHBOARD_TRIALS, name: str = DASHBOARD_STUDY
                         ) -> tuple[str, optuna.Study]:
    """A finished study as ``make search`` leaves one, in minutes less: ``n_trials`` COMPLETE trials run by the
    search's worker loop (:func:`sts_utils.studies.run_worker`) over the compendium's search space into the
    default journal file of demo/resnet18 under ``data_dir``; the objective is a cheap function of the
    parameters (no training). Returns the journal file's path and the study."""
    storage = studies.default_storage("demo", "resnet18", data_dir)
    space = profiles.SPACES["compendium"]

    def objective(trial) -> float:
        p = profiles.suggest(trial, space)
        return 1.0 - abs(math.log10(p["lr"]) + 3.0) / 3.0 - p["dropout"] / 2.0

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per check, not one per trial
    try:
        study = studies.run_worker(objective, n_trials, name=name, storage=storage, progress=False)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return storage, study


def dashboard_version() -> str:
    from importlib.metadata import version
    return version("optuna-dashboard")


def start_dashboard(storage: str, cwd: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``optuna-dashboard <storage>`` (README's command, the venv's executable) on a free port of 127.0.0.1."""
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("optuna-dashboard")), storage, "--host", "127.0.0.1", "--port", str(port)]
    return start_server(cmd, port, "/api/studies", "optuna-dashboard", log_path, cwd)


# the trial list of a study's page: its header ("4 Trials") and one "Trial <number>" entry per trial
TRIAL_LIST_SHOWN = r"""n => { const t = document.body.innerText;
    return t.includes(n + ' Trials') && (t.match(/^Trial \d+$/gm) || []).length >= n; }"""


def trial_list_problem(text: str, trials: list) -> str | None:
    """What the text of a study's trial list page (``/dashboard/studies/<id>/trials``) lacks of ``trials``, the
    trials of a finished study, or ``None``: the header "<n> Trials", a "Trial <number>" entry per trial followed
    by its state (Complete), and, beside the list, the first trial's value and each of its parameters."""
    n, numbers = len(trials), sorted(t.number for t in trials)
    count = re.findall(r"^(\d+) Trials$", text, re.M)
    entries = {int(k): state for k, state in re.findall(r"^Trial (\d+)\n(\w+)$", text, re.M)}
    if count != [str(n)] or sorted(entries) != numbers:
        return f"shows {count[0] if count else 'no'} trials, numbers {sorted(entries)}, not the study's {n} ({numbers})"
    not_complete = {k: state for k, state in entries.items() if state != "Complete"}
    if not_complete:
        return f"marks trials {not_complete} instead of Complete"
    first = trials[0]
    value = re.findall(r"^Value\n+(\S+)$", text, re.M)
    try:
        shown = float(value[0]) if value else None
    except ValueError:
        shown = None
    if shown is None or not math.isclose(shown, first.value, rel_tol=1e-12):
        return f"shows trial {first.number}'s value as {value[0] if value else 'nothing'}, not {first.value!r}"
    absent = [k for k in first.params if not re.search(rf"^{re.escape(k)} \S", text, re.M)]
    if absent:
        return f"does not show trial {first.number}'s parameters {', '.join(absent)}"
    return None


def check_dashboard(browser, shots: Path | None, log_path: Path, timeout_ms: int) -> str:
    with tempfile.TemporaryDirectory(prefix="sts-dashboard-check-") as tmp:
        storage, study = small_finished_study(Path(tmp) / "data")
        trials = study.get_trials(deepcopy=False)
        proc, base = start_dashboard(storage, Path(tmp), log_path)
        requested: list[str] = []
        blocked: list[str] = []
        errors: list[str] = []
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            block_internet(page, blocked)
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # the home page lists the study; its link leads to the study's page
            page.goto(f"{base}/", wait_until="domcontentloaded", timeout=timeout_ms)
            link = f"a[href^='/dashboard/studies/']:has-text('{study.study_name}')"
            try:
                page.wait_for_selector(link, timeout=timeout_ms)
            except Exception:
                if shots:
                    page.screenshot(path=str(shots / "dashboard_failed.png"))
                raise CheckFailed(f"optuna-dashboard's home page does not list the study {study.study_name} "
                                  f"(script errors: {errors[:1] or 'none'}; internet requests blocked: "
                                  f"{blocked[:1] or 'none'}; log: {log_path})") from None
            if shots:
                page.screenshot(path=str(shots / "dashboard_home.png"))
            href = page.get_attribute(link, "href")
            page.goto(f"{base}{href}/trials", wait_until="domcontentloaded", timeout=timeout_ms)
            try:
                page.wait_for_function(TRIAL_LIST_SHOWN, arg=len(trials), timeout=timeout_ms)
            except Exception:
                pass  # said precisely below, from what the page shows
            if shots:
                page.screenshot(path=str(shots / "dashboard_trials.png"))
            problem = trial_list_problem(page.inner_text("body"), trials)
            if problem:
                raise CheckFailed(f"optuna-dashboard's {href}/trials {problem} (script errors: {errors[:1] or 'none'}; "
                                  f"internet requests blocked: {blocked[:1] or 'none'}; log: {log_path})")
            page.close()
        finally:
            stop_server(proc)
    if blocked:
        raise CheckFailed(f"optuna-dashboard asked the internet for {len(blocked)} resources (first: {blocked[0]})")
    if errors:
        raise CheckFailed(f"{len(errors)} script errors in optuna-dashboard (first: {errors[0]})")
    n_local = sum(u.startswith("http://127.0.0.1") for u in requested)
    return (f"dashboard: study {study.study_name} with {len(trials)} trials listed (optuna-dashboard "
            f"{dashboard_version()} on its journal file; {n_local} requests to 127.0.0.1); 0 internet requests")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--build-dir", default=str(ROOT / "build"))
    parser.add_argument("--book", help="book folder (default: <build-dir>/<dataset>/book)")
    parser.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="JupyterLab root (default: notebooks/)")
    parser.add_argument("--browser", help="Chromium executable (default: /usr/bin/chromium, $STS_CHROMIUM)")
    parser.add_argument("--skip-book", action="store_true")
    parser.add_argument("--skip-lab", action="store_true")
    parser.add_argument("--skip-dashboard", action="store_true")
    parser.add_argument("--only", choices=CHECKS, action="append",
                        help="run only this check (repeatable; default: all of book, lab, dashboard)")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per page (default 60)")
    args = parser.parse_args(argv)
    skipped = {c for c in CHECKS if getattr(args, f"skip_{c}")}
    run = [c for c in CHECKS if c in (args.only or CHECKS) and c not in skipped]
    if not run:
        parser.error(f"nothing left to check: --only {' --only '.join(args.only or [])} and the --skip options "
                     "leave out every check")

    browser_path = find_browser(args.browser)
    if browser_path is None:
        print("check-browser: no Chromium found. Install the system one (Debian/Ubuntu: "
              "`sudo apt-get install chromium`) or pass --browser /path/to/chromium; this tool never downloads one.",
              file=sys.stderr)
        return 2
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("check-browser: playwright-python is not installed (`.venv/bin/pip install -e '.[browser]'`)",
              file=sys.stderr)
        return 2

    out = (Path(args.build_dir) / args.dataset / "browser").resolve()
    out.mkdir(parents=True, exist_ok=True)
    shots = None if args.no_screenshots else out
    book = (Path(args.book) if args.book else Path(args.build_dir) / args.dataset / "book").resolve()
    timeout_ms = int(args.timeout * 1000)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_ARGS)
            try:
                lines = []
                if "book" in run:
                    lines.append(check_book(browser, book, shots, timeout_ms))
                if "lab" in run:
                    lines.append(check_lab(browser, Path(args.notebooks).resolve(), shots, out / "jupyter-lab.log",
                                           timeout_ms))
                if "dashboard" in run:
                    lines.append(check_dashboard(browser, shots, out / "optuna-dashboard.log", timeout_ms))
            finally:
                browser.close()
    except CheckFailed as err:
        print(f"check-browser: FAILED: {err}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"check-browser: {line}")
    if shots:
        print(f"check-browser: screenshots in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
