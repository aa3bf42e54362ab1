"""Fixtures for the real-browser tests (JupyterLab in headless Chromium).

Fixtures (see ``harness.py`` for the helpers they return):

* ``jupyter_server`` (function): a loopback-only JupyterLab server, started once per run; a test
  parametrized with ``@pytest.mark.parametrize("frontend", FRONTENDS, indirect=True)`` runs in
  JupyterLab and in Jupyter Notebook 7 (a second server, started once too).
* ``browser`` (package): Debian Chromium via Playwright, launched once; skips every UI test
  when ``/usr/bin/chromium`` is missing.
* ``page`` (function): a fresh browser context and page per test; afterwards every kernel
  started by the test is shut down. ``@pytest.mark.browser_context(**kwargs)`` passes extra
  ``new_context`` arguments, e.g. ``device_scale_factor=2`` for crisp doc screenshots.
* ``new_notebook`` (function): ``new_notebook(cells, name=None) -> Notebook`` opened in ``page``
  (the plain function ``harness.open_notebook(page, server, cells)`` does the same).

Every test in this directory gets the ``ui`` marker, so ``pytest -m "not ui"`` skips them. When a
UI test fails, a screenshot is saved under pytest's base temp dir (``ui-failures/``) and the
report gains the browser console and the server log tail.

Server and browser are package-scoped (torn down after the last test under ``tests/ui``)
because Playwright's sync API keeps an asyncio loop marked as running in the main thread while
it is alive: ``asyncio.run()`` (nbclient, ...) fails in the meantime. Inside UI tests, run such
code in a thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

try:  # tests/ui is a package; the fallback serves rootdir-less runs without __init__.py
    from . import harness
except ImportError:
    import harness

_HERE = Path(__file__).resolve().parent
_CONSOLE = pytest.StashKey[list]()
_SHOTS = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``browser_context`` marker (extra Playwright ``new_context`` arguments)."""
    config.addinivalue_line(
        "markers", "browser_context(**kwargs): extra Playwright new_context() arguments"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from this directory as ``ui``."""
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.ui)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """On a failed UI test: screenshot the page and attach console + server log to the report."""
    report = yield
    if report.when == "call" and report.failed:
        page = getattr(item, "funcargs", {}).get("page")
        server = getattr(item, "funcargs", {}).get("jupyter_server")
        if page is not None:
            shots = item.stash[_SHOTS]
            shots.mkdir(parents=True, exist_ok=True)
            target = shots / (re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid) + ".png")
            try:
                page.screenshot(path=str(target))
                report.sections.append(("ui screenshot", str(target)))
            except Exception as exc:  # the page may be gone
                report.sections.append(("ui screenshot", f"failed: {exc}"))
        console = item.stash.get(_CONSOLE, None)
        if console:
            report.sections.append(("browser console", "\n".join(console[-40:])))
        if server is not None:
            report.sections.append(("jupyter server log", server.log_tail(40)))
    return report


def _require_ui_tools() -> None:
    """Skip (before any server starts) when Chromium, Playwright or JupyterLab is missing.

    ``scripts/test.sh`` (and so CI) sets ``MASKMAGIC_REQUIRE_UI=1``, which turns the skip into a
    failure: there the browser tests must run, never quietly vanish.
    """
    required = os.environ.get("MASKMAGIC_REQUIRE_UI") == "1"
    if not os.path.exists(harness.CHROMIUM):
        if required:
            pytest.fail(f"MASKMAGIC_REQUIRE_UI=1 but {harness.SKIP_REASON}")
        pytest.skip(harness.SKIP_REASON)
    for module in ("playwright.sync_api", "jupyterlab", "notebook"):
        if required:
            __import__(module)  # an ImportError fails the test
        else:
            pytest.importorskip(module)


@pytest.fixture(scope="package")
def jupyter_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], harness.JupyterServer]]:
    """``get(frontend) -> JupyterServer``: one server per front end, started on first use and
    shared by all UI tests (see :func:`jupyter_server`)."""
    _require_ui_tools()
    servers: dict[str, harness.JupyterServer] = {}

    def get(frontend: str) -> harness.JupyterServer:
        if frontend not in servers:
            base = tmp_path_factory.mktemp(f"jupyter-{frontend}")
            servers[frontend] = harness.start_jupyter_server(base, frontend=frontend)
        return servers[frontend]

    try:
        yield get
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def frontend(request: pytest.FixtureRequest) -> str:
    """The front end of this test: ``"lab"``, unless the test is parametrized over
    :data:`harness.FRONTENDS` with
    ``@pytest.mark.parametrize("frontend", FRONTENDS, indirect=True)``."""
    return getattr(request, "param", "lab")


@pytest.fixture
def jupyter_server(
    jupyter_servers: Callable[[str], harness.JupyterServer], frontend: str
) -> harness.JupyterServer:
    """A JupyterLab (or Notebook 7) server on ``127.0.0.1:<free port>``, shared by all UI tests
    of its front end.

    No token, no password, no XSRF check; news, update checks and the PyPI extension manager
    are off; ``window.jupyterapp`` is exposed to pages; widget state is saved with notebooks;
    the user's Jupyter/IPython config is replaced by empty temporary directories; kernels get
    the repository root on PYTHONPATH. A :class:`harness.JupyterServer` (``.url``,
    ``.root_dir``, ``.log_tail()``, ...).
    """
    return jupyter_servers(frontend)


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    """Headless Debian Chromium (Playwright sync API), shared by all UI tests.

    Skips with :data:`harness.SKIP_REASON` when the binary is missing. Requests to any host
    other than 127.0.0.1/localhost fail inside the browser (see :data:`harness.CHROMIUM_ARGS`).
    """
    _require_ui_tools()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = harness.launch_browser(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(
    browser: object,
    jupyter_server: harness.JupyterServer,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[object]:
    """A fresh browser context and page (``harness.VIEWPORT``, 30 s default timeouts).

    ``@pytest.mark.browser_context(device_scale_factor=2, viewport=...)`` overrides the
    ``browser.new_context`` arguments.

    After the test the context is closed and all kernels on the server are shut down, so
    each test starts with no kernels and an empty JupyterLab workspace.
    """
    options = {"viewport": harness.VIEWPORT}
    marker = request.node.get_closest_marker("browser_context")
    if marker is not None:
        options.update(marker.kwargs)
    context = browser.new_context(**options)
    context.set_default_timeout(30_000)
    page = context.new_page()
    console: list[str] = []
    request.node.stash[_CONSOLE] = console
    request.node.stash[_SHOTS] = tmp_path_factory.getbasetemp() / "ui-failures"
    page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    try:
        yield page
    finally:
        context.close()
        jupyter_server.shutdown_kernels()


@pytest.fixture
def new_notebook(
    page: object, jupyter_server: harness.JupyterServer, request: pytest.FixtureRequest
) -> Iterator[Callable[..., harness.Notebook]]:
    """Factory ``new_notebook(cells, name=None, timeout=60) -> harness.Notebook``.

    Writes the notebook (named after the test unless ``name`` is given), opens it in ``page``
    and waits for an idle kernel; cells are not run yet.
    """
    opened: list[harness.Notebook] = []
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def factory(
        cells: Sequence[str], name: str | None = None, timeout: float = harness.KERNEL_START_TIMEOUT
    ) -> harness.Notebook:
        nb = harness.open_notebook(
            page, jupyter_server, cells, name=name or f"{base}-{len(opened)}", timeout=timeout
        )
        opened.append(nb)
        return nb

    yield factory
    for nb in opened:
        nb.close_client()
