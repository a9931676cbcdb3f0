"""The notebooks with widgets (00, 01, 02, 04, 05, 06) in a real browser: JupyterLab with ipywidgets, in headless
Chromium driven by Playwright.

A notebook can pass nbval and still show "Error displaying widget" to every reader; these tests look at what the
reader sees. One JupyterLab server (127.0.0.1, random port and token, smoke mode, hermetic Jupyter dirs) serves a
temporary copy of the notebooks. Each notebook is first opened as saved, before running anything: as a reader who
just opened it (an untrusted notebook: JupyterLab shows each widget's static copy), then trusted (JupyterLab
renders the widgets from the saved widget state, with a note that they are copies); the same saved notebooks are
also rendered as a web page that ignores widgets and strips inline styles, like a code-hosting site. Then all
cells run, and the live widgets are moved and their numbers compared with the package's. A copy whose widgets were
saved without state or static copy (a notebook not yet executed with scripts/run_notebook.py) is executed with it,
in smoke mode, before the server starts. Screenshots go to test-artifacts/browser/ (the path is printed at the end).

Needs Debian's `chromium` (root: `apt-get install -y chromium`) and `pip install -e ".[test]"` (jupyterlab,
playwright; no browser download). Without them the tests skip, except under CI (CI=true), where they fail.
Run them alone with `pytest -m browser`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
SAVED = Path(os.environ.get("ORPO_KIT_BROWSER_NOTEBOOKS", NOTEBOOKS))  # the saved notebooks to open (a copy of them)
NB00, NB01, NB02 = "00_environment_check.ipynb", "01_preference_data.ipynb", "02_orpo_loss.ipynb"
NB04, NB05, NB06 = "04_training.ipynb", "05_logprobs_before_after.ipynb", "06_chat_and_evaluate.ipynb"
WIDGET_NOTEBOOKS = (NB00, NB01, NB02, NB04, NB05, NB06)  # 04 shows its live dashboard as an image, not a widget
DASHBOARD_CELL = "LiveDashboard("  # the source of 04's training cell
STATIC_NOTE = "Static copy of the widget: run the cells above to interact."  # orpo_kit.viz.static.STATIC_NOTE
WIDGET_ERRORS = ("Error displaying widget", "Loading widget")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]  # containers often have a 64 MB /dev/shm: Chromium would crash
INSTALL_HINT = (
    "install Chromium with `apt-get update && apt-get install -y chromium` (as root) and the Python side "
    'with `pip install -e ".[test]"` (jupyterlab, playwright; no browser download needed)'
)
SERVER_START_S, APP_START_S, KERNEL_START_S, RUN_ALL_S, WIDGET_S = 60, 60, 90, 300, 30  # 2 busy cores: generous
EXECUTE_S = 600  # executing the copies that lack saved widget state, all at once


def chromium_executable() -> str | None:
    """Debian's chromium (or a distribution's chromium-browser) on PATH."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _require_browser_tools() -> str:
    """The Chromium path; skip (fail under CI=true) with install instructions when anything is missing."""
    missing = [name for name in ("playwright", "jupyterlab") if importlib.util.find_spec(name) is None]
    executable = chromium_executable()
    if executable is None:
        missing.insert(0, "chromium")
    if missing:
        message = f"browser tests need {', '.join(missing)}: {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: .ci/run installs them, so a missing one is an error)", pytrace=False)
        pytest.skip(message)
    return executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(home: Path) -> dict[str, str]:
    """The server's (and so the kernels') environment: smoke mode, offline, and Jupyter dirs of its own."""
    env = dict(os.environ)
    env.update(
        {
            "ORPO_KIT_SMOKE": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TQDM_DISABLE": "1",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "OMP_NUM_THREADS": "1",  # two kernels side by side on 2 cores: one thread each, none waiting on another
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython"),
        }
    )
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    user_settings = {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},  # no news toast
        "notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the DOM, in view or not
    }
    for plugin, values in user_settings.items():
        path = home / "config" / "lab" / "user-settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return env


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it shuts its kernels down), SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class Lab:
    """A running JupyterLab server and a headless Chromium: open notebooks, run them, inspect their widgets."""

    def __init__(self, url: str, token: str, log: Path, started: float, root: Path, env: dict[str, str]) -> None:
        self.url, self.token, self.log = url, token, log
        self.root, self.env = root, env  # the served folder; the server's environment (its Jupyter dirs)
        self.browser: Any = None
        self.pages: dict[str, tuple[Any, BaseException | None]] = {}  # notebook -> (page, error while starting)
        self.console_errors: list[str] = []
        self.started, self.timings = started, []  # (what, seconds since the server was started)

    def mark(self, what: str) -> None:
        self.timings.append((what, time.monotonic() - self.started))

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def start(self, name: str, page: Any = None) -> None:
        """Start Run All Cells in notebook `name` (on `page`, else a new one) without waiting: notebooks run side
        by side."""
        try:
            page = page or self.open_notebook(name)
            page.evaluate("""() => {
                window.__orpoRunAll = undefined;
                window.jupyterapp.commands.execute('notebook:run-all-cells').then(
                    ok => { window.__orpoRunAll = ok === false ? 'a cell failed' : 'ok'; },
                    err => { window.__orpoRunAll = 'command error: ' + err; });
            }""")
            self.pages[name] = (page, None)
        except Exception as exc:  # reported by the test of this notebook, with a screenshot
            self.pages[name] = (page, exc)

    def ran(self, name: str) -> Any:
        """The page of notebook `name` once Run All Cells has finished (started here if no test started it);
        fails on a cell error."""
        if name not in self.pages:
            self.start(name)
        page, error = self.pages[name]
        if error is not None:
            raise AssertionError(
                f"opening {name} failed: {type(error).__name__}: {error}\n{self.diagnose(page, name)}"
            ) from error
        with _diagnosed(self, page, name):
            page.wait_for_function("() => window.__orpoRunAll !== undefined", timeout=RUN_ALL_S * 1000, polling=500)
            result = page.evaluate("() => window.__orpoRunAll")
            self.mark(f"{name} ran")
            if result != "ok":
                errors = page.evaluate("""() => Array.from(document.querySelectorAll(
                    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'),
                    e => e.textContent)""")  # tracebacks (and warnings) of the run
                raise AssertionError(f"Run All Cells in {name}: {result}\n" + "\n".join(errors)[-4000:])
        return page

    def trust(self, name: str) -> None:
        """Sign notebook `name` for this server, as JupyterLab does when a reader saves it: it opens trusted."""
        subprocess.run(
            [sys.executable, "-m", "jupyter", "trust", str(self.root / name)],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def open_notebook(self, name: str, workspace: str = "") -> Any:
        """A page showing notebook `name` (its own workspace) once JupyterLab is up and its kernel is idle."""
        page = self.browser.new_page(viewport={"width": 1000, "height": 700})
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(f"{name}: {m.text}"))
        page.on("pageerror", lambda e: self.console_errors.append(f"{name}: page error {e}"))
        workspace = re.sub(r"\W", "", Path(name).stem) + workspace
        page.goto(f"{self.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={self.token}")
        page.wait_for_function("() => window.jupyterapp !== undefined", timeout=APP_START_S * 1000)
        page.evaluate("() => { window.jupyterapp.restored.then(() => { window.__orpoRestored = true; }); }")
        page.wait_for_function("() => window.__orpoRestored === true", timeout=APP_START_S * 1000)
        page.wait_for_function(
            """(path) => {
                for (const w of window.jupyterapp.shell.widgets('main')) {
                    const kernel = w.context && w.context.path === path && w.sessionContext.session
                        && w.sessionContext.session.kernel;
                    if (kernel && kernel.status === 'idle') { window.jupyterapp.shell.activateById(w.id); return true; }
                }
                return false;
            }""",
            arg=name,
            timeout=KERNEL_START_S * 1000,
            polling=250,
        )
        self.mark(f"{name} kernel idle")
        return page

    def widget_errors(self, page: Any) -> list[str]:
        """Every widget placeholder or error text anywhere on the page (textContent: cells out of view count too)."""
        text = page.evaluate("() => document.body.textContent")
        return [marker for marker in WIDGET_ERRORS if marker in text]

    def diagnose(self, page: Any, name: str) -> str:
        """On failure: a full-page screenshot and the server log tail, for the error message."""
        shot = ARTIFACTS / f"{Path(name).stem}_failure.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True)
        console = "\n".join(self.console_errors[-20:])
        return f"screenshot {shot}\nbrowser console errors:\n{console}\nserver log tail:\n{self.log_tail()}"


@contextlib.contextmanager
def _diagnosed(lab: Lab, page: Any, name: str) -> Iterator[None]:
    """Attach a screenshot, console errors and the server log to any failure inside the block."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\n{lab.diagnose(page, name)}") from exc


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 (random port and token) over a temporary copy of notebooks/, in smoke mode."""
    executable = _require_browser_tools()
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("jupyter")
    root = home / "notebooks"  # the kernels' cwd: what the notebooks write (runs/...) stays out of the repo
    root.mkdir()
    for notebook in SAVED.glob("*.ipynb"):
        shutil.copy(notebook, root / notebook.name)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    env, started = _server_env(home), time.monotonic()
    executed = _execute_copies(root, env)
    port, token, log = _free_port(), secrets.token_hex(16), home / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, log, started, root, env)
    lab.timings.append((f"executed first: {', '.join(executed) or 'none'}", time.monotonic() - started))
    try:
        deadline = started + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"{lab.url}/api/status?token={token}", timeout=5).close()
                lab.mark("server up")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    state = f"exited with {server.returncode}" if server.poll() is not None else "no answer"
                    pytest.fail(
                        f"JupyterLab did not start ({state} after {SERVER_START_S} s):\n"
                        f"{log.read_text(errors='replace')[-3000:]}",
                        pytrace=False,
                    )
                time.sleep(0.3)
        with sync_playwright() as playwright:
            lab.browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            lab.mark("chromium up")
            try:
                yield lab
            finally:
                lab.browser.close()
    finally:
        _stop(server)
        _report(request.config, lab)


def _execute_copies(root: Path, env: dict[str, str]) -> list[str]:
    """Execute, in smoke mode with scripts/run_notebook.py (all at once), the copies whose widgets a reader could
    not see (no saved state or static copy); their names. Fails if that still leaves such a widget."""
    from orpo_kit.viz.static import saved_widget_problems

    def problems(name: str) -> list[str]:
        return saved_widget_problems(json.loads((root / name).read_text()), name)

    todo = [name for name in WIDGET_NOTEBOOKS if problems(name)]
    script = str(ROOT / "scripts" / "run_notebook.py")
    runs = {
        name: subprocess.Popen(
            [sys.executable, script, name],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in todo
    }
    for name, process in runs.items():
        output, _ = process.communicate(timeout=EXECUTE_S)
        if process.returncode != 0 or problems(name):
            pytest.fail(
                f"executing {name} with {script}: exit {process.returncode}, {problems(name)}\n{output[-3000:]}"
            )
    return todo


def _report(config: pytest.Config, lab: Lab) -> None:
    """Where the screenshots are and how long each step took, on the terminal (not captured)."""
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png"))
    lines = [
        f"browser test screenshots ({len(shots)}): {ARTIFACTS}",
        "browser test timings: " + ", ".join(f"{what} {at:.0f} s" for what, at in lab.timings),
    ]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def _output_with(page: Any, selector: str) -> Any:
    """The one cell output that contains `selector` (a widget's own HTML)."""
    output = page.locator(".jp-OutputArea-output").filter(has=page.locator(selector))
    output.first.wait_for(state="visible", timeout=WIDGET_S * 1000)
    assert output.count() == 1, f"expected one output with {selector}, found {output.count()}"
    return output.first


def _slider(output: Any, label: str) -> Any:
    """The ipywidgets slider whose description is exactly `label`."""
    page = output.page
    return output.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(label)}$"))
    )


def _screenshot(element: Any, name: str) -> Path:
    """A PNG of one widget area in ARTIFACTS; it must show something (more than one colour)."""
    from PIL import Image

    path = ARTIFACTS / name
    element.scroll_into_view_if_needed()
    element.screenshot(path=str(path))
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 1, f"{path} is blank (one colour)"
    return path


# --- Before running: the saved notebook as a reader first sees it ----------------------------------------------


def _widget_cells(path: Path) -> list[int]:
    """Indices of the cells whose saved outputs hold a widget (04: the cell that draws the live dashboard)."""
    cells = json.loads(path.read_text())["cells"]
    widget = [
        i
        for i, cell in enumerate(cells)
        if any("application/vnd.jupyter.widget-view+json" in out.get("data", {}) for out in cell.get("outputs", []))
    ]
    return widget or [i for i, cell in enumerate(cells) if DASHBOARD_CELL in "".join(cell["source"])]


def _cell_output(page: Any, index: int, holding: str) -> Any:
    """The output of notebook cell `index` that holds `holding` (every cell is in the DOM: windowing is off)."""
    outputs = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea-output")
    return outputs.filter(has=page.locator(holding)).first


def _expect_static_copy(output: Any) -> None:
    """The output shows a static copy: HTML led by the note, or a PNG that loaded (the note drawn in it)."""
    from playwright.sync_api import expect

    output.wait_for(state="visible", timeout=WIDGET_S * 1000)
    copy, image = output.locator(".orpo-static-copy"), output.locator("img")
    if copy.count():
        expect(copy).to_contain_text(STATIC_NOTE)
    else:
        expect(image).to_have_count(1)
        image.wait_for(state="visible", timeout=WIDGET_S * 1000)
        assert image.evaluate("img => img.complete && img.naturalWidth > 100"), "the static copy's PNG did not load"


@pytest.mark.parametrize("name", WIDGET_NOTEBOOKS)
def test_saved_notebook_shows_its_widgets_before_running(lab: Lab, name: str) -> None:
    """Opened as saved: untrusted, each widget's static copy; trusted, the widget restored from its saved state
    under the note. Never "Error displaying widget" nor a `VBox(children=...` repr. Then Run All starts."""
    from playwright.sync_api import expect

    stem, cells = Path(name).stem, _widget_cells(lab.root / name)
    assert cells, f"{name} saved no widget output"
    page = lab.open_notebook(name, "-opened")
    with _diagnosed(lab, page, name):
        for i in cells:
            _expect_static_copy(_cell_output(page, i, ".orpo-static-copy, img"))
        assert "VBox(children" not in page.evaluate("() => document.body.textContent")
        assert lab.widget_errors(page) == []
        _screenshot(_cell_output(page, cells[0], ".orpo-static-copy, img"), f"{stem}_saved_static_copy.png")
    page.close()
    lab.trust(name)
    page = lab.open_notebook(name, "-trusted")
    with _diagnosed(lab, page, name):
        shown = "img" if name == NB04 else ".jupyter-widgets"
        for i in cells:
            output = _cell_output(page, i, shown)
            output.wait_for(state="visible", timeout=WIDGET_S * 1000)
            if name != NB04:
                expect(output.locator(".orpo-static-note")).to_be_visible(timeout=WIDGET_S * 1000)
                expect(output.locator(".jupyter-widgets-disconnected").first).to_be_visible()
        assert lab.widget_errors(page) == []
        _screenshot(_cell_output(page, cells[0], shown), f"{stem}_saved_widget.png")
    lab.start(name, page)  # the live checks below wait for it


def test_saved_notebooks_on_a_web_page(lab: Lab) -> None:
    """The saved notebooks as a code-hosting site shows them: widget views ignored, inline styles stripped
    (nbconvert's HTML, rewritten so): every widget leaves its static copy, coloured views as images."""
    import nbformat
    from nbconvert import HTMLExporter

    page = lab.browser.new_page(viewport={"width": 1000, "height": 700})
    page.route("**/*", lambda route: route.abort())  # offline: the page's CDN scripts do not matter
    for name in WIDGET_NOTEBOOKS:
        notebook = nbformat.read(lab.root / name, as_version=4)
        notebook.metadata.pop("widgets", None)
        pngs = []
        for cell in notebook.cells:
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if data.pop("application/vnd.jupyter.widget-view+json", None) is not None and "image/png" in data:
                    pngs.append(data["image/png"][:64])
        body, _ = HTMLExporter().from_notebook_node(notebook)
        body = re.sub(r"<style.*?</style>|\sstyle=\"[^\"]*\"", "", body, flags=re.S)
        page.set_content(body, wait_until="domcontentloaded")
        with _diagnosed(lab, page, f"{name}_web_page"):
            text = page.evaluate("() => document.body.textContent")
            assert "VBox(children" not in text
            copies = page.locator(".orpo-static-copy")
            assert copies.count() + len(pngs) == len(_widget_cells(lab.root / name)) or name == NB04
            for png in pngs:
                page.locator(f'img[src^="data:image/png;base64,{png}"]').first.wait_for(timeout=WIDGET_S * 1000)
            first = page.locator(f'img[src^="data:image/png;base64,{pngs[0]}"]').first if pngs else copies.first
            if name != NB04:
                _screenshot(first, f"{Path(name).stem}_web_page.png")
    page.close()


# --- After running: the live widgets -----------------------------------------------------------------------------


def test_notebook_02_loss_sliders_show_the_package_loss(lab: Lab) -> None:
    from playwright.sync_api import expect

    from orpo_kit.viz.loss_view import loss_terms

    name = NB02
    page = lab.ran(name)
    with _diagnosed(lab, page, name):
        out = _output_with(page, ".orpo-loss-terms")
        total = out.locator(".orpo-loss-terms b")
        for label in ("p(chosen)", "p(rejected)", "λ"):
            expect(_slider(out, label)).to_have_count(1)
        expect(out.locator(".widget-slider .noUi-handle")).to_have_count(3)
        expect(total).to_have_text(re.compile(r"^loss = \d+\.\d{4}$"), timeout=WIDGET_S * 1000)
        assert lab.widget_errors(page) == []
        _screenshot(out, "02_loss_explorer_start.png")
        start_total = total.inner_text()

        def readouts() -> tuple[float, float, float]:
            return tuple(
                float(_slider(out, label).locator(".widget-readout").inner_text())
                for label in ("p(chosen)", "p(rejected)", "λ")
            )

        def expect_loss_for_shown_sliders() -> tuple[float, float, float]:
            values = readouts()
            expected = loss_terms(*values)["loss"]  # what the package computes for what the reader sees
            expect(total).to_have_text(f"loss = {expected:.4f}", timeout=WIDGET_S * 1000)
            expect(out.locator(".orpo-loss-terms")).to_contain_text(
                f"p(chosen) = {values[0]:.2f}, p(rejected) = {values[1]:.2f}, λ = {values[2]:.2f}"
            )
            return values

        start = readouts()
        # λ: the keyboard on the slider's handle (noUiSlider moves one step, 0.05, per arrow key)
        lam_slider = _slider(out, "λ")
        lam_slider.locator(".noUi-handle").focus()
        for _ in range(6):
            page.keyboard.press("ArrowRight")
        expect(lam_slider.locator(".widget-readout")).to_have_text(f"{start[2] + 0.30:.2f}", timeout=WIDGET_S * 1000)
        moved = expect_loss_for_shown_sliders()
        assert moved[2] != start[2] and total.inner_text() != start_total
        # p(rejected): typed into the slider's readout, as a reader can
        rejected_readout = _slider(out, "p(rejected)").locator(".widget-readout")
        rejected_readout.fill("0.85")
        rejected_readout.press("Enter")
        expect(rejected_readout).to_have_text("0.85", timeout=WIDGET_S * 1000)
        final = expect_loss_for_shown_sliders()
        assert final == (start[0], 0.85, moved[2])
        assert not math.isclose(loss_terms(*final)["loss"], loss_terms(*start)["loss"])
        assert lab.widget_errors(page) == []
        _screenshot(out, "02_loss_explorer_moved.png")


def _pager_prompts(notebook: Path) -> list[str]:
    """The prompts notebook 05's pager shows, pair by pair, computed here from its smoke-mode knobs."""
    from orpo_kit.config import resolve_config
    from orpo_kit.data import tokenize_pairs
    from orpo_kit.models import load_tokenizer
    from orpo_kit.train import load_train_eval
    from orpo_kit.viz.token_view import align_pairs

    cells = json.loads(notebook.read_text())["cells"]
    knobs_cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    knobs: dict[str, Any] = {"smoke": lambda: True}
    exec("".join(knobs_cell["source"]), knobs)  # the notebook's own knobs cell, in smoke mode
    cfg = resolve_config(knobs["PRESET"], overrides={"use_lora": True, "max_eval_pairs": knobs["EVAL_PAIRS"]})
    eval_pairs = load_train_eval(cfg)[1]
    tokenized = tokenize_pairs(
        load_tokenizer(cfg), eval_pairs, cfg.max_length, cfg.max_prompt_length, cfg.min_completion_tokens
    )
    n = knobs["N_SHOWN"]
    return [pair.prompt for pair in align_pairs(eval_pairs[:n], tokenized[:n])]


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_notebook_05_pager_pages_through_pairs(lab: Lab) -> None:
    from playwright.sync_api import expect

    name = NB05
    prompts = _pager_prompts(NOTEBOOKS / name)
    assert len(prompts) >= 2 and prompts[0] != prompts[1]
    page = lab.ran(name)
    with _diagnosed(lab, page, name):
        out = _output_with(page, ".widget-slider")
        shown = out.locator(".orpo-pair")
        expect(_slider(out, "pair")).to_have_count(1)
        expect(out.locator(".widget-toggle-buttons")).to_have_count(1)
        readout = _slider(out, "pair").locator(".widget-readout")
        expect(readout).to_have_text("0", timeout=WIDGET_S * 1000)
        expect(shown).to_contain_text("pair 0", timeout=WIDGET_S * 1000)
        assert _squash(prompts[0]) in _squash(shown.inner_text())
        assert lab.widget_errors(page) == []
        _screenshot(out, "05_pair_pager_pair0.png")

        out.get_by_role("button", name="next", exact=True).click()
        expect(readout).to_have_text("1", timeout=WIDGET_S * 1000)
        expect(shown).to_contain_text("pair 1", timeout=WIDGET_S * 1000)
        expect(shown).to_contain_text(_squash(prompts[1]))
        assert _squash(prompts[0]) not in _squash(shown.inner_text())

        out.get_by_role("button", name="base", exact=True).click()  # the colouring: base model instead of change
        expect(shown).to_contain_text("logp under the base model", timeout=WIDGET_S * 1000)
        expect(shown).to_contain_text("pair 1")
        assert lab.widget_errors(page) == []
        _screenshot(out, "05_pair_pager_pair1_base.png")

        out.get_by_role("button", name="previous", exact=True).click()
        expect(readout).to_have_text("0", timeout=WIDGET_S * 1000)
        expect(shown).to_contain_text(_squash(prompts[0]), timeout=WIDGET_S * 1000)


def _live(lab: Lab, name: str) -> Any:
    """The page of `name` after Run All, with no widget error and no static-copy note left visible."""
    page = lab.ran(name)
    with _diagnosed(lab, page, name):
        assert lab.widget_errors(page) == []
        notes = page.locator(".orpo-static-note")
        for k in range(notes.count()):
            assert not notes.nth(k).is_visible(), "a live widget still shows the static-copy note"
    return page


def test_notebook_00_estimator_shows_the_package_estimate(lab: Lab) -> None:
    from playwright.sync_api import expect

    from orpo_kit.envcheck import estimate_fit_text

    page = _live(lab, NB00)
    with _diagnosed(lab, page, NB00):
        out = _output_with(page, ".orpo-estimate")
        batch = _slider(out, "batch")
        start = int(batch.locator(".widget-readout").inner_text())
        batch.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        expect(batch.locator(".widget-readout")).to_have_text(str(start + 1), timeout=WIDGET_S * 1000)
        preset = out.locator("select").input_value()
        length = int(_slider(out, "max_length").locator(".widget-readout").inner_text())
        gpu = float(_slider(out, "GPU GiB").locator(".widget-readout").inner_text())
        checkpointing = out.locator("input[type=checkbox]").is_checked()
        expected = estimate_fit_text(preset, length, start + 1, checkpointing, gpu)
        expect(out.locator(".orpo-estimate")).to_have_text(expected, timeout=WIDGET_S * 1000)
        _screenshot(out, "00_estimator_moved.png")


def test_notebook_01_browsers_page_through_pairs(lab: Lab) -> None:
    from playwright.sync_api import expect

    page = _live(lab, NB01)
    with _diagnosed(lab, page, NB01):
        browser = _output_with(page, "button:has-text('next ▶')")
        expect(browser).to_contain_text("pair 0 of", timeout=WIDGET_S * 1000)
        browser.get_by_role("button", name="next ▶").click()
        expect(browser).to_contain_text("pair 1 of", timeout=WIDGET_S * 1000)
        _screenshot(browser, "01_pair_browser_pair1.png")
        roles = page.locator(".jp-OutputArea-output").filter(has=page.locator(".orpo-tok-completion"))
        roles = roles.filter(has=page.locator(".widget-slider"))  # the widget, not the ordinary cell above it
        expect(roles).to_have_count(1, timeout=WIDGET_S * 1000)
        view = roles.locator(".widget-html-content").last
        before = view.inner_text()
        slider = _slider(roles, "pair")
        slider.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        expect(slider.locator(".widget-readout")).to_have_text("1", timeout=WIDGET_S * 1000)
        expect(view).not_to_have_text(before, timeout=WIDGET_S * 1000)
        expect(view.locator(".orpo-tok-completion").first).to_be_visible()
        _screenshot(roles, "01_token_roles_pair1.png")
        truncation = _output_with(page, ".widget-slider:has-text('max_length')")
        expect(truncation).to_contain_text("kept whole")
        _screenshot(truncation, "01_truncation_explorer.png")


def test_notebook_04_dashboard_is_drawn(lab: Lab) -> None:
    page = _live(lab, NB04)
    with _diagnosed(lab, page, NB04):
        cell = _widget_cells(lab.root / NB04)[0]
        image = page.locator(".jp-Notebook .jp-Cell").nth(cell).locator(".jp-OutputArea-output img")
        image.first.wait_for(state="visible", timeout=WIDGET_S * 1000)
        assert image.count() == 1, "the dashboard is one figure updated in place"
        _screenshot(image.first, "04_live_dashboard.png")


def test_notebook_06_chat_panel_answers_a_new_prompt(lab: Lab) -> None:
    from playwright.sync_api import expect

    page = _live(lab, NB06)
    with _diagnosed(lab, page, NB06):
        out = _output_with(page, "textarea")
        shown = out.locator(".orpo-chat")
        expect(shown).to_contain_text("tuned", timeout=WIDGET_S * 1000)  # answers from the start
        prompt = "Name a colour of the sea."
        out.locator("textarea").fill(prompt)
        out.locator("textarea").press("Tab")  # the Textarea sends its value on blur
        out.get_by_role("button", name="generate", exact=True).click()
        expect(shown).to_contain_text(f"prompt: {prompt}", timeout=WIDGET_S * 1000)
        expect(shown.locator("b", has_text=re.compile(r"^(base|tuned)$"))).to_have_count(2)
        _screenshot(out, "06_chat_panel_new_prompt.png")
