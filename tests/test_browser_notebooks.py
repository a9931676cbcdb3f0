"""Notebooks 02 and 05 in a real browser: JupyterLab with ipywidgets, in headless Chromium driven by Playwright.

A notebook can pass nbval and still show "Error displaying widget" to every reader; these tests look at what the
reader sees. One JupyterLab server (127.0.0.1, random port and token, smoke mode, hermetic Jupyter dirs) serves a
temporary copy of the notebooks; each test opens one notebook, runs all its cells, checks the widgets render,
moves them, compares the numbers on the page with the package's, and saves screenshots in
test-artifacts/browser/ (the path is printed at the end).

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
NB02, NB05 = "02_orpo_loss.ipynb", "05_logprobs_before_after.ipynb"
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
SERVER_START_S, APP_START_S, KERNEL_START_S, RUN_ALL_S, WIDGET_S = 60, 60, 90, 240, 30  # 2 busy cores: generous


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

    def __init__(self, url: str, token: str, log: Path, started: float) -> None:
        self.url, self.token, self.log = url, token, log
        self.browser: Any = None
        self.pages: dict[str, tuple[Any, BaseException | None]] = {}  # notebook -> (page, error while starting)
        self.console_errors: list[str] = []
        self.started, self.timings = started, []  # (what, seconds since the server was started)

    def mark(self, what: str) -> None:
        self.timings.append((what, time.monotonic() - self.started))

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def start(self, name: str) -> None:
        """Open notebook `name` and start Run All Cells without waiting: the notebooks run side by side."""
        page = None
        try:
            page = self.open_notebook(name)
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
        """The page of notebook `name` once Run All Cells has finished; fails on a cell error."""
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

    def open_notebook(self, name: str) -> Any:
        """A page showing notebook `name` (its own workspace) once JupyterLab is up and its kernel is idle."""
        page = self.browser.new_page(viewport={"width": 1000, "height": 700})
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(f"{name}: {m.text}"))
        page.on("pageerror", lambda e: self.console_errors.append(f"{name}: page error {e}"))
        workspace = re.sub(r"\W", "", Path(name).stem)
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
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(notebook, root / notebook.name)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
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
    started = time.monotonic()
    with open(log, "w") as out:
        server = subprocess.Popen(
            cmd, cwd=root, env=_server_env(home), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, log, started)
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
                for name in (NB05, NB02):  # the longest first: it trains a tiny LoRA run
                    lab.start(name)
                yield lab
            finally:
                lab.browser.close()
    finally:
        _stop(server)
        _report(request.config, lab)


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
