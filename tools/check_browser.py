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

Screenshots for a human go to ``build/<dataset>/browser/``. Exit 0 when all is well; otherwise one
line saying why and exit 1 (2: no browser or no playwright).
"""
from __future__ import annotations

import argparse
import json
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

from sts_utils.pages.book import notebook_pages

ROOT = Path(__file__).resolve().parents[1]
BROWSER_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LAB_NOTEBOOK = "02_scalograms.py"
KERNEL_DISPLAY_NAME = "Python (sts)"


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
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"jupyter lab exited with {proc.returncode} (log: {log_path})")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    return proc, base, token
        except OSError:
            time.sleep(0.5)
    raise CheckFailed(f"jupyter lab did not answer within 120 s (log: {log_path})")


def stop_lab(proc: subprocess.Popen) -> None:
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
            stop_lab(proc)
    return (f"lab: {LAB_NOTEBOOK} opens as a notebook ({n_code} code cells) on {KERNEL_DISPLAY_NAME}; "
            f"an unedited save leaves it byte-identical")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--build-dir", default=str(ROOT / "build"))
    parser.add_argument("--book", help="book folder (default: <build-dir>/<dataset>/book)")
    parser.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="JupyterLab root (default: notebooks/)")
    parser.add_argument("--browser", help="Chromium executable (default: /usr/bin/chromium, $STS_CHROMIUM)")
    parser.add_argument("--skip-book", action="store_true")
    parser.add_argument("--skip-lab", action="store_true")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per page (default 60)")
    args = parser.parse_args(argv)

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
                if not args.skip_book:
                    lines.append(check_book(browser, book, shots, timeout_ms))
                if not args.skip_lab:
                    lines.append(check_lab(browser, Path(args.notebooks).resolve(), shots, out / "jupyter-lab.log",
                                           timeout_ms))
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
