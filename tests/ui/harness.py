"""Real-browser test harness: JupyterLab in headless Debian Chromium, driven by Playwright.

The fixtures in ``conftest.py`` wrap the pieces defined here:

* :func:`start_jupyter_server` / :class:`JupyterServer`: one loopback-only JupyterLab server per
  test session, with every outbound network feature (news, update checks, PyPI extension
  manager) turned off and user configuration isolated in a temporary directory.
* :func:`launch_browser`: Debian's ``/usr/bin/chromium`` (Playwright cannot download browsers
  here), headless, with a dead proxy so that nothing but ``127.0.0.1`` can be reached.
* :func:`open_notebook` / :class:`Notebook`: writes a notebook, opens it in JupyterLab, runs
  cells through JupyterLab's own commands (what the Run menu and Shift+Enter call) and reads
  values back from the kernel itself (not from the DOM) over a second ZMQ client.

Nothing here imports maskmagic; the kernels find the package through ``PYTHONPATH``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The browser binary: Debian's chromium package (``apt-get install chromium``).
CHROMIUM = os.environ.get("MASKMAGIC_UI_CHROMIUM", "/usr/bin/chromium")

#: Why UI tests are skipped when :data:`CHROMIUM` is missing.
SKIP_REASON = "Debian chromium not installed (apt-get install chromium); CI installs it"

#: Chromium flags. The dead proxy (port 9, "discard") plus the resolver rules make every
#: non-loopback request fail inside the browser, including Chromium's own background services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1;localhost",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]

#: Default viewport of every test page (CSS pixels).
VIEWPORT = {"width": 1280, "height": 900}

REPO_ROOT = Path(__file__).resolve().parents[2]

SERVER_START_TIMEOUT = 120.0  # a loaded 2-core CI box needs ~30 s
KERNEL_START_TIMEOUT = 60.0
RUN_TIMEOUT = 120.0
EVAL_TIMEOUT = 30.0

# JupyterLab user settings written into the isolated settings directory.
_LAB_SETTINGS = {
    # No "would you like news?" toast, no news feed, no update check.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    # Keep every cell attached to the DOM so locators find cells outside the viewport.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # Settings > Save Widget State Automatically: saved notebooks carry the widgets' state.
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
}

#: The front ends the widget tests run in: JupyterLab 4 and Jupyter Notebook 7 (both load
#: widgets through the same jupyterlab-manager and anywidget extensions).
FRONTENDS = ("lab", "notebook")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# JavaScript: the NotebookPanel showing `path` (JupyterLab is exposed as window.jupyterapp).
_JS_PANEL = """
const panelFor = (path) => {
  const app = window.jupyterapp;
  if (!app) return null;
  return Array.from(app.shell.widgets('main')).find(
    (w) => w.context && w.context.path === path && w.content && w.content.widgets
  ) || null;
};
"""


class HarnessError(AssertionError):
    """A harness step failed (server, browser, kernel); the message carries the evidence."""


class CellError(HarnessError):
    """A notebook cell run through the UI raised; the message holds the kernel's traceback."""


class KernelEvalError(HarnessError):
    """An expression or statement run by :meth:`Notebook.kernel_eval` / ``kernel_exec`` raised."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A urllib opener that never uses a proxy from the environment (loopback only).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class JupyterServer:
    """A running JupyterLab or Notebook 7 server (see :func:`start_jupyter_server`).

    Attributes:
        frontend: ``"lab"`` (JupyterLab) or ``"notebook"`` (Jupyter Notebook 7).
        url: Base URL without a trailing slash, e.g. ``http://127.0.0.1:41234``.
        root_dir: Directory the server serves; notebooks are written here.
        runtime_dir: ``JUPYTER_RUNTIME_DIR`` of the server; kernel connection files live here.
        log_path: File receiving the server's stdout and stderr.
        proc: The server process (leader of its own process group).
    """

    frontend: str
    url: str
    root_dir: Path
    runtime_dir: Path
    log_path: Path
    proc: subprocess.Popen = field(repr=False)
    _notebooks: set = field(default_factory=set, repr=False)  # those with a kernel client

    def page_url(self, path: str) -> str:
        """The URL that opens notebook ``path`` in this front end (JupyterLab: from an empty
        workspace, so notebooks of earlier tests are not reopened)."""
        if self.frontend == "lab":
            return f"{self.url}/lab/tree/{path}?reset"
        return f"{self.url}/notebooks/{path}"

    def log_tail(self, n: int = 40) -> str:
        """Return the last ``n`` lines of the server log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return "\n".join(lines[-n:])

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the REST API (``path`` like ``/api/sessions``); return the decoded JSON or None."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with _OPENER.open(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def shutdown_kernels(self) -> None:
        """Delete every session and kernel (called after each test; a fresh page starts its own).

        The notebooks' kernel clients (see :meth:`Notebook.kernel_eval`) are closed first.
        """
        for nb in list(self._notebooks):
            nb.close_client()
        with contextlib.suppress(OSError, ValueError):
            for session in self.api("GET", "/api/sessions"):
                with contextlib.suppress(OSError):
                    self.api("DELETE", f"/api/sessions/{session['id']}")
            for kernel in self.api("GET", "/api/kernels"):
                with contextlib.suppress(OSError):
                    self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the kernels down, SIGTERM the server, then SIGKILL its process group if needed.

        Under load the server sometimes stalls in "Shutting down extensions" after SIGTERM;
        the kernels are already gone by then, so a short wait and SIGKILL lose nothing.
        """
        if self.proc.poll() is None:
            self.shutdown_kernels()
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        # Kernels run in their own process groups; anything the server left behind goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the forked child (Linux): get SIGTERM when pytest dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _write_lab_settings(settings_dir: Path) -> None:
    for rel, value in _LAB_SETTINGS.items():
        target = settings_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value, indent=2))


def start_jupyter_server(
    base_dir: Path,
    *,
    frontend: str = "lab",
    timeout: float = SERVER_START_TIMEOUT,
    attempts: int = 3,
) -> JupyterServer:
    """Start ``jupyter lab`` (or ``jupyter notebook``, Notebook 7) on a free loopback port and
    wait until ``/api/status`` answers.

    Args:
        frontend: ``"lab"`` or ``"notebook"`` (see :data:`FRONTENDS`).
        base_dir: An empty temporary directory; ``root``, ``runtime``, ``config``,
            ``settings``, ``workspaces`` and ``ipython`` are created inside it, so the user's
            own Jupyter/IPython configuration never leaks into tests.
        timeout: Seconds to wait for the server to answer.
        attempts: Ports to try (a port picked by :func:`free_port` may be taken in between).

    Returns:
        The running server; call :meth:`JupyterServer.stop` when done.

    Raises:
        HarnessError: The server exited or did not answer in time (with the log's last lines).
    """
    dirs = {n: base_dir / n for n in ("root", "runtime", "config", "settings", "workspaces")}
    dirs["ipython"] = base_dir / "ipython"
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    _write_lab_settings(dirs["settings"])

    env = dict(os.environ)
    env.update(
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(dirs["ipython"]),
        # Kernels import maskmagic from this checkout even when it is not pip-installed.
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)

    last_error = ""
    for attempt in range(attempts):
        port = free_port()
        log_path = base_dir / f"server-{attempt}.log"
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            frontend,
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={dirs['root']}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        # Notebook 7 also loads JupyterLab's server extension (LabApp), which serves settings.
        for app in ("LabApp",) if frontend == "lab" else ("LabApp", "JupyterNotebookApp"):
            cmd += [
                f"--{app}.expose_app_in_browser=True",
                f"--{app}.user_settings_dir={dirs['settings']}",
                f"--{app}.workspaces_dir={dirs['workspaces']}",
            ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=dirs["root"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        server = JupyterServer(
            frontend=frontend,
            url=f"http://127.0.0.1:{port}",
            root_dir=dirs["root"],
            runtime_dir=dirs["runtime"],
            log_path=log_path,
            proc=proc,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                server.api("GET", "/api/status", timeout=2.0)
                return server
            except (OSError, ValueError):
                time.sleep(0.1)
        server.stop()
        last_error = (
            f"jupyter lab (attempt {attempt + 1}, port {port}) "
            + (f"exited with code {proc.returncode}" if proc.poll() is not None else "")
            + f" did not answer /api/status within {timeout:.0f} s.\n"
            f"Command: {' '.join(cmd)}\nLast lines of {log_path}:\n{server.log_tail()}"
        )
        if "already in use" not in server.log_tail():
            break
    raise HarnessError(last_error)


def launch_browser(playwright: Any, *, headless: bool = True) -> Any:
    """Launch Debian's Chromium through Playwright (sync API) with :data:`CHROMIUM_ARGS`."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=headless, args=CHROMIUM_ARGS, timeout=60_000
    )


def saved_widget_states(notebook: dict) -> dict[str, dict]:
    """``{model_id: state}`` from a saved notebook's widget metadata, with each binary buffer
    decoded back into its place in the state (as ``bytes``)."""
    import base64

    saved = notebook.get("metadata", {}).get("widgets", {})
    models = saved.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    states = {}
    for model_id, entry in models.items():
        state = entry["state"]
        for buffer in entry.get("buffers", []):
            *parents, last = buffer["path"]
            target = state
            for key in parents:
                target = target[key]
            target[last] = base64.b64decode(buffer["data"])
        states[model_id] = state
    return states


def notebook_json(cells: Sequence[str]) -> dict:
    """Return an nbformat-4.5 notebook (Python 3 kernel) whose code cells hold ``cells``."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{i}",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for i, source in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


class Notebook:
    """One notebook open in a JupyterLab page, with its kernel.

    Create it with :func:`open_notebook`. Cells run through JupyterLab's commands
    (``notebook:run-all-cells`` / ``notebook:run-cell``, what the Run menu and Shift+Enter
    invoke), so outputs and widgets render in the browser exactly as for a user. Values are
    read back from the kernel over a second ZMQ client (:meth:`kernel_eval`), which sends
    silent requests: nothing appears in the notebook and widget comms are not disturbed.

    Attributes:
        page: The Playwright page.
        server: The :class:`JupyterServer`.
        path: Notebook path relative to the server root (e.g. ``"test_x-1.ipynb"``).
        console: Browser console messages and page errors seen since the notebook was opened.
    """

    def __init__(self, page: Any, server: JupyterServer, path: str) -> None:
        self.page = page
        self.server = server
        self.path = path
        self.console: list[str] = []
        self._client: Any = None
        self._client_kernel_id: str | None = None
        page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))

    # -- diagnostics ---------------------------------------------------------------------------

    def diagnostics(self, n: int = 25) -> str:
        """Last browser console lines and server log lines, for failure messages."""
        console = "\n".join(self.console[-n:]) or "<none>"
        return (
            f"--- browser console (last {n}) ---\n{console}\n"
            f"--- server log (last {n}) ---\n{self.server.log_tail(n)}"
        )

    def _js(self, body: str, arg: Any = None) -> Any:
        return self.page.evaluate(f"async (arg) => {{ {_JS_PANEL} {body} }}", arg)

    def _wait_js(self, body: str, arg: Any, timeout: float, what: str) -> Any:
        try:
            return self.page.wait_for_function(
                f"(arg) => {{ {_JS_PANEL} {body} }}", arg=arg, timeout=timeout * 1000
            ).json_value()
        except Exception as exc:  # playwright TimeoutError, or the page went away
            raise HarnessError(
                f"{what} ({self.path}): {type(exc).__name__}: {str(exc).splitlines()[0]}\n"
                + self.diagnostics()
            ) from None

    # -- kernel state as seen by the page ------------------------------------------------------

    def wait_kernel_idle(self, timeout: float = KERNEL_START_TIMEOUT) -> None:
        """Wait until the page's kernel connection is up and the kernel reports ``idle``."""
        self._wait_js(
            """
            const panel = panelFor(arg);
            const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
            return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
            """,
            self.path,
            timeout,
            f"kernel not idle within {timeout:.0f} s",
        )

    @property
    def kernel_id(self) -> str:
        """Id of the kernel the page is connected to."""
        kid = self._js(
            "const p = panelFor(arg); const s = p && p.sessionContext.session;"
            " return s && s.kernel ? s.kernel.id : null;",
            self.path,
        )
        if not kid:
            raise HarnessError(f"{self.path} has no kernel\n" + self.diagnostics())
        return kid

    # -- running cells through the UI ------------------------------------------------------------

    def run_all(self, timeout: float = RUN_TIMEOUT, check: bool = True) -> None:
        """Run every cell (Run > Run All Cells) and wait until all have finished.

        Args:
            timeout: Seconds for the whole run.
            check: Raise :class:`CellError` if any cell produced an error output.
        """
        self._run(None, timeout, check)

    def run_cell(self, index: int, timeout: float = RUN_TIMEOUT, check: bool = True) -> None:
        """Select cell ``index`` and run it (like Ctrl+Enter), waiting until it has finished."""
        self._run(index, timeout, check)

    def _run(self, index: int | None, timeout: float, check: bool) -> None:
        self.wait_kernel_idle()
        token = uuid.uuid4().hex
        # The command's promise resolves once each cell's execute_reply and idle have arrived,
        # i.e. when its outputs are in the model; an error in a cell stops the run there.
        started = self._js(
            """
            const app = window.jupyterapp;
            const panel = panelFor(arg.path);
            if (!panel) return 'no panel';
            app.shell.activateById(panel.id);
            const nb = panel.content;
            if (arg.index !== null) {
              if (arg.index < 0 || arg.index >= nb.widgets.length) return 'no cell ' + arg.index;
              nb.activeCellIndex = arg.index;
              nb.deselectAll();
            }
            const runs = (window.__mmRuns = window.__mmRuns || {});
            runs[arg.token] = false;
            const cmd = arg.index === null ? 'notebook:run-all-cells' : 'notebook:run-cell';
            app.commands.execute(cmd).then(
              () => { runs[arg.token] = true; },
              (e) => { runs[arg.token] = 'error: ' + e; });
            return 'ok';
            """,
            {"path": self.path, "index": index, "token": token},
        )
        if started != "ok":
            raise HarnessError(f"cannot run {self.path}: {started}\n" + self.diagnostics())
        done = self._wait_js(
            "return window.__mmRuns[arg];", token, timeout, f"cells not finished in {timeout:.0f} s"
        )
        if done is not True:
            raise HarnessError(f"running {self.path} failed: {done}\n" + self.diagnostics())
        self.wait_kernel_idle(timeout)
        if check:
            errors = self.errors(index)
            if errors:
                raise CellError("\n\n".join(errors))

    def errors(self, index: int | None = None) -> list[str]:
        """Error outputs now in cell ``index`` (default: every cell), as ``"cell N: traceback"``."""
        found = self._js(
            """
            const panel = panelFor(arg.path);
            const out = [];
            panel.content.widgets.forEach((cell, i) => {
              const outputs = cell.model.outputs;
              if (!outputs || (arg.index !== null && arg.index !== i)) return;
              for (let k = 0; k < outputs.length; k++) {
                const o = outputs.get(k).toJSON();
                if (o.output_type === 'error') {
                  out.push('cell ' + i + ': ' + ((o.traceback || []).join('\\n') || o.ename + ': ' + o.evalue));
                }
              }
            });
            return out;
            """,
            {"path": self.path, "index": index},
        )
        return [_ANSI.sub("", e) for e in found]

    # -- DOM helpers ---------------------------------------------------------------------------

    def cell(self, index: int) -> Any:
        """Playwright locator of cell ``index`` (input and output)."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(
            index
        )

    def output(self, index: int) -> Any:
        """Playwright locator of the output area of cell ``index``."""
        return self.cell(index).locator(".jp-OutputArea").first

    def screenshot(
        self, path: str | os.PathLike, selector: str | None = None, **kwargs: Any
    ) -> Path:
        """Save a PNG of the page, or of the first element matching ``selector``.

        Args:
            path: Target file; parent directories are created.
            selector: CSS/Playwright selector, e.g. ``".widget-slider"``; None for the viewport.
            **kwargs: Passed on to Playwright's ``screenshot`` (``full_page=True``, ...).

        Returns:
            The path written.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("animations", "disabled")
        if selector is None:
            self.page.screenshot(path=str(target), **kwargs)
        else:
            self.page.locator(selector).first.screenshot(path=str(target), **kwargs)
        return target

    # -- the kernel itself -----------------------------------------------------------------------

    def _kernel_client(self) -> Any:
        import zmq
        from jupyter_client import BlockingKernelClient

        kid = self.kernel_id
        if self._client is None or self._client_kernel_id != kid:
            self.close_client()
            conn = self.server.runtime_dir / f"kernel-{kid}.json"
            if not conn.exists():
                raise HarnessError(
                    f"no connection file {conn} for kernel {kid}\n" + self.diagnostics()
                )
            # Our own context, closed with linger=0 in close_client(): a zmq context left to
            # the garbage collector blocks the interpreter in Context.term() forever.
            client = BlockingKernelClient(context=zmq.Context())
            client.load_connection_file(str(conn))
            client.start_channels(iopub=False, stdin=False, hb=False, control=False)
            client.shell_channel.socket.linger = 0
            self._client, self._client_kernel_id = client, kid
            self.server._notebooks.add(self)
        return self._client

    def _request(self, code: str, user_expressions: dict, timeout: float) -> dict:
        client = self._kernel_client()
        msg_id = client.execute(
            code,
            silent=True,
            store_history=False,
            user_expressions=user_expressions,
            allow_stdin=False,
        )
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HarnessError(
                    f"kernel did not answer within {timeout:.0f} s (busy?) for {code or user_expressions!r}\n"
                    + self.diagnostics()
                )
            try:
                reply = client.get_shell_msg(timeout=remaining)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]

    def kernel_eval(self, expr: str, timeout: float = EVAL_TIMEOUT) -> str:
        """Evaluate ``expr`` in the notebook's kernel namespace and return ``repr()`` of the value.

        The request is silent (no output, no execution count, not in history) and comes from a
        separate client, so it is invisible to the page and does not touch widget comms. It
        waits while a cell is running (the kernel handles one request at a time).

        Raises:
            KernelEvalError: ``expr`` raised in the kernel.
        """
        content = self._request("", {"r": f"repr({expr})"}, timeout)
        result = content.get("user_expressions", {}).get("r", {})
        if content.get("status") != "ok" or result.get("status") != "ok":
            info = result if result.get("status") == "error" else content
            tb = _ANSI.sub("", "\n".join(info.get("traceback", [])))
            raise KernelEvalError(
                f"kernel_eval({expr!r}) raised {info.get('ename')}: {info.get('evalue')}\n{tb}"
            )
        # text/plain of a str is a Python literal (IPython may split long ones over lines).
        return ast.literal_eval(result["data"]["text/plain"])

    def kernel_exec(self, code: str, timeout: float = EVAL_TIMEOUT) -> None:
        """Run statements in the kernel silently (output is discarded; widget updates still
        reach the page, since JupyterLab routes comm messages whoever sent the request).

        Raises:
            KernelEvalError: ``code`` raised in the kernel.
        """
        content = self._request(code, {}, timeout)
        if content.get("status") != "ok":
            tb = _ANSI.sub("", "\n".join(content.get("traceback", [])))
            raise KernelEvalError(
                f"kernel_exec raised {content.get('ename')}: {content.get('evalue')}\n{tb}"
            )

    def wait_for_kernel(
        self,
        expr: str,
        expected: str | Callable[[str], bool],
        timeout: float = 10.0,
        interval: float = 0.1,
    ) -> str:
        """Poll :meth:`kernel_eval` until it returns ``expected`` (a repr string, or a predicate
        on it) and return that repr; browser-to-kernel updates are asynchronous.

        Raises:
            HarnessError: The value did not arrive in time (message shows the last value).
        """
        check = expected if callable(expected) else (lambda value: value == expected)
        deadline = time.monotonic() + timeout
        while True:
            value = self.kernel_eval(expr)
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"kernel value of {expr!r} is {value}, expected {expected!r} "
                    f"within {timeout:.0f} s\n" + self.diagnostics()
                )
            time.sleep(interval)

    # -- saving and reopening ------------------------------------------------------------------

    def save(self, timeout: float = 30.0) -> dict:
        """File > Save (the ``docmanager:save`` command, as Ctrl+S) and return the notebook as
        written to disk. With the harness's settings the file carries the widget state."""
        result = self._js(
            """
            const app = window.jupyterapp;
            const panel = panelFor(arg);
            if (!panel) return 'no panel';
            app.shell.activateById(panel.id);
            await app.commands.execute('docmanager:save');
            return panel.context.model.dirty ? 'still dirty' : 'ok';
            """,
            self.path,
        )
        if result != "ok":
            raise HarnessError(f"saving {self.path} failed: {result}\n" + self.diagnostics())
        return json.loads((self.server.root_dir / self.path).read_text())

    def reopen(self, timeout: float = KERNEL_START_TIMEOUT) -> None:
        """Shut the kernel down and load the notebook's page again from the saved file.

        The page gets a fresh kernel that has run nothing, so every widget it shows is rebuilt
        from the widget state saved in the file alone (jupyterlab-manager, in JupyterLab and
        Notebook 7, restores saved widgets only once a kernel is connected).
        """
        self.close_client()
        self.server.shutdown_kernels()
        start_session(self.server, self.path, timeout)
        self.page.goto(
            self.server.page_url(self.path), wait_until="domcontentloaded", timeout=timeout * 1000
        )
        self._wait_js(
            "const p = panelFor(arg); return !!p && !!p.sessionContext.session;",
            self.path,
            timeout,
            f"the notebook did not open again within {timeout:.0f} s",
        )
        self.wait_kernel_idle(timeout)

    def close_client(self) -> None:
        """Close the ZMQ client used by :meth:`kernel_eval` (the kernel keeps running)."""
        client, self._client, self._client_kernel_id = self._client, None, None
        self.server._notebooks.discard(self)
        if client is not None:
            with contextlib.suppress(Exception):
                client.stop_channels()
            with contextlib.suppress(Exception):
                client.context.destroy(linger=0)


def start_session(server: JupyterServer, path: str, timeout: float = KERNEL_START_TIMEOUT) -> None:
    """Start a kernel session for notebook ``path`` before its page loads; the page joins it.

    Also what keeps saved widgets showing: jupyterlab-manager restores the widget state saved
    in a notebook only when the kernel is there as the page connects (if the page starts the
    kernel itself, it may mark the restore done first and show "model not found").
    """
    try:
        server.api(
            "POST",
            "/api/sessions",
            {"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}},
            timeout=timeout,
        )
    except (OSError, ValueError) as exc:
        raise HarnessError(
            f"cannot start a kernel for {path}: {exc}\n{server.log_tail()}"
        ) from None


def open_notebook(
    page: Any,
    server: JupyterServer,
    cells: Sequence[str],
    name: str | None = None,
    timeout: float = KERNEL_START_TIMEOUT,
) -> Notebook:
    """Write a notebook with ``cells`` to the server root, open it in ``page`` and wait for its
    kernel to be idle. The cells are not run: call :meth:`Notebook.run_all` or ``run_cell``.

    Args:
        page: A Playwright page (a fresh one per test: see the ``page`` fixture).
        server: The running :class:`JupyterServer`.
        cells: Source of each code cell.
        name: File name without ``.ipynb`` (default: a random one); must be new.
        timeout: Seconds for JupyterLab to load and the kernel to start.

    Returns:
        The open :class:`Notebook`.
    """
    stem = name or f"nb-{uuid.uuid4().hex[:8]}"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    path = f"{stem}.ipynb"
    (server.root_dir / path).write_text(json.dumps(notebook_json(cells), indent=1))
    start_session(server, path, timeout)
    nb = Notebook(page, server, path)
    page.goto(server.page_url(path), wait_until="domcontentloaded", timeout=timeout * 1000)
    nb._wait_js(
        "const p = panelFor(arg); return !!p && !!p.sessionContext.session;",
        path,
        timeout,
        f"JupyterLab did not open the notebook within {timeout:.0f} s",
    )
    nb.wait_kernel_idle(timeout)
    # A wider notebook for screenshots: hide the file browser (JupyterLab's left area).
    page.evaluate(
        "() => window.jupyterapp.shell.collapseLeft && window.jupyterapp.shell.collapseLeft()"
    )
    return nb
