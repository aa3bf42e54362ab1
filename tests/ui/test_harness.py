"""Smoke tests of the UI harness: widget front ends work offline in JupyterLab + Chromium."""

from __future__ import annotations

import pytest

try:  # conftest.py imports the harness the same way
    from .harness import REPO_ROOT, CellError, KernelEvalError, open_notebook
except ImportError:
    from harness import REPO_ROOT, CellError, KernelEvalError, open_notebook

pytestmark = pytest.mark.ui

COUNTER = '''
import anywidget
import traitlets


class Counter(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const button = document.createElement("button");
      button.className = "mm-counter";
      const show = () => { button.textContent = `count is ${model.get("count")}`; };
      button.addEventListener("click", () => {
        model.set("count", model.get("count") + 1);
        model.save_changes();
      });
      model.on("change:count", show);
      show();
      el.appendChild(button);
    }
    export default { render };
    """
    count = traitlets.Int(0).tag(sync=True)


c = Counter()
c
'''


@pytest.mark.browser_context(device_scale_factor=2)
def test_ipywidgets_slider_reaches_kernel(new_notebook, tmp_path):
    nb = new_notebook(["import ipywidgets as w; s = w.IntSlider(value=3); s"])
    nb.run_all()
    handle = nb.output(0).locator(".widget-slider .noUi-handle")
    handle.wait_for(state="visible")
    assert nb.kernel_eval("s.value") == "3"

    handle.focus()
    nb.page.keyboard.press("ArrowRight")
    assert nb.wait_for_kernel("s.value", "4") == "4"

    shot = nb.screenshot(tmp_path / "slider.png", selector=".widget-slider")
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG")
    width = int.from_bytes(png[16:20], "big")  # IHDR: device pixels
    css_width = nb.page.locator(".widget-slider").first.bounding_box()["width"]
    assert abs(width - 2 * css_width) <= 2


def test_anywidget_click_reaches_kernel_and_back(new_notebook):
    nb = new_notebook([COUNTER])
    nb.run_all()
    button = nb.output(0).locator("button.mm-counter")
    button.wait_for(state="visible")
    assert button.text_content() == "count is 0"

    button.click()
    assert nb.wait_for_kernel("c.count", "1") == "1"

    # kernel -> browser: a change made from the harness's own kernel client renders
    nb.kernel_exec("c.count = 5")
    nb.page.wait_for_function(
        "() => document.querySelector('button.mm-counter').textContent === 'count is 5'"
    )
    assert nb.kernel_eval("c.count") == "5"


def test_run_cell_and_cell_errors(new_notebook):
    nb = new_notebook(["x = 1", "x += 1", "1 / 0"])
    nb.run_cell(1, check=False)  # NameError: cell 0 has not run
    assert "NameError" in nb.errors()[0]
    nb.run_cell(0)
    nb.run_cell(1)
    assert nb.kernel_eval("x") == "2"
    assert nb.kernel_eval("'a\\nb' * 40") == repr("a\nb" * 40)
    with pytest.raises(CellError, match="ZeroDivisionError"):
        nb.run_cell(2)
    with pytest.raises(KernelEvalError, match="NameError"):
        nb.kernel_eval("undefined_name")


def test_open_notebook_function_and_loopback_only(page, jupyter_server):
    nb = open_notebook(page, jupyter_server, ["y = [i * i for i in range(3)]"], name="plain")
    assert nb.path == "plain.ipynb" and (jupyter_server.root_dir / nb.path).exists()
    nb.run_all()
    assert nb.kernel_eval("y") == "[0, 1, 4]"
    # Kernels can import maskmagic from this checkout.
    assert nb.kernel_eval("__import__('sys').path").count(repr(str(REPO_ROOT))) >= 1
    # The browser cannot reach anything but loopback (dead proxy + resolver rules).
    blocked = page.evaluate(
        "() => fetch('http://example.com/').then(() => 'reached', (e) => 'blocked: ' + e)"
    )
    assert blocked.startswith("blocked"), blocked
