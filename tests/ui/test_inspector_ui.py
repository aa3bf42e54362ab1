"""GradientInspector in JupyterLab + headless Chromium: heatmaps draw, hover shows the right
connection, the Step button runs the op and the kernel sees the new drift."""

from __future__ import annotations

import ast

import numpy as np
import pytest

try:  # conftest.py imports the harness the same way
    from .harness import FRONTENDS, REPO_ROOT, saved_widget_states
except ImportError:
    from harness import FRONTENDS, REPO_ROOT, saved_widget_states

pytestmark = pytest.mark.ui

SETUP = '''
import numpy as np
from maskmagic import build
from maskmagic.widgets.inspector import GradientInspector

net, ops = build("""
input x 6
dense hidden 10 activation=tanh mask=banded(2)
dense out 3 mask=[[1,0,0]]*5+[[0,1,1]]*5
loss mse
optimizer sgd learning_rate=0.1
train keep_first freeze=out[0]
""", seed=0)
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 6)).astype("float32")
y = np.tanh(x @ rng.normal(size=(6, 3))).astype("float32")
'''
SHOW = 'w = GradientInspector(net, x, y, op=ops["keep_first"])\nw'
POOLED = """
wide, _ = build("input a 600\\ndense wide 300 mask=random(0.3,seed=1)\\n", seed=0)
w2 = GradientInspector(wide, rng.normal(size=(8, 600)), rng.normal(size=(8, 300)))
w2
"""

# Pixels of a canvas that are painted and not the white background.
_PAINTED = """(c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let k = 0; k < d.length; k += 4) {
    if (d[k + 3] > 0 && !(d[k] > 250 && d[k + 1] > 250 && d[k + 2] > 250)) n++;
  }
  return n;
}"""


@pytest.mark.parametrize("frontend", FRONTENDS, indirect=True)
def test_heatmaps_hover_and_step(new_notebook, frontend, tmp_path):
    nb = new_notebook([SETUP, SHOW, POOLED])
    nb.run_all()
    widget = nb.output(1).locator(".mm-insp")
    widget.wait_for(state="visible")
    canvas = widget.locator('.mm-insp-layer[data-layer="0"] canvas.mm-insp-canvas')
    nb.page.wait_for_function(
        "(c) => c.width > 0 && c.height > 0", arg=canvas.element_handle(), timeout=30_000
    )
    # The heatmap draws: most of the hidden layer's 60 cells are coloured or hatched.
    assert canvas.evaluate(_PAINTED) > 0.5 * canvas.evaluate("(c) => c.width * c.height")
    out_canvas = widget.locator('.mm-insp-layer[data-layer="1"] canvas.mm-insp-canvas')
    assert out_canvas.evaluate(_PAINTED) > 0
    assert "masked with grad ≠ 0 0 ✓" in widget.locator(".mm-insp-check").first.inner_text()

    # Hover the cell (i, j) = (2, 3) of the hidden layer: a 6 x 10 grid plus the bias row.
    box = canvas.bounding_box()
    cell = box["width"] / 10
    nb.page.mouse.move(box["x"] + 3.5 * cell, box["y"] + 2.5 * cell)
    tip = widget.locator('.mm-insp-layer[data-layer="0"] .mm-insp-tip')
    tip.wait_for(state="visible")
    assert "(i, j) = (2, 3)" in tip.inner_text()
    assert (tip.get_attribute("data-i"), tip.get_attribute("data-j")) == ("2", "3")
    gradient = float(nb.kernel_eval("float(w.gradients['hidden'][2, 3])"))
    assert f"{gradient:.3e}"[:5] in tip.inner_text() or f"{gradient:.4g}"[:5] in tip.inner_text()

    # The Step button runs keep_first: out[0] cannot move, the other outputs do.
    widget.locator(".mm-insp-step").click()
    assert nb.wait_for_kernel("w.step_info.get('steps')", "1", timeout=30) == "1"
    assert nb.kernel_eval("float(w.drift['out'][0])") == "0.0"
    assert float(nb.kernel_eval("float(w.drift['out'][1])")) > 0
    still = widget.locator('.mm-insp-driftitem[data-unit="0"]')
    still.wait_for(state="visible")
    assert still.inner_text() == "out[0] 0.0"

    # Would-be view for the screenshot, with the tooltip on a masked connection.
    widget.locator('.mm-insp-view[data-view="would_be"]').click()
    assert nb.wait_for_kernel("w.view", "'would_be'") == "'would_be'"
    box = canvas.bounding_box()  # the drift line moved the heatmaps down
    nb.page.mouse.move(box["x"] + 9.5 * cell, box["y"] + 0.5 * cell)
    tip.wait_for(state="visible")
    assert "(i, j) = (0, 9)" in tip.inner_text() and "mask 0" in tip.inner_text()
    docs = REPO_ROOT / "docs" if frontend == "lab" else tmp_path  # the README shows JupyterLab
    nb.screenshot(docs / "inspector.png", selector=".mm-insp")

    # A 600 x 300 layer arrives pooled (3 x 2 blocks); a click zooms into full resolution.
    pooled = nb.output(2).locator(".mm-insp")
    info = pooled.locator(".mm-insp-zoominfo")
    info.wait_for(state="visible")
    assert "3×2 blocks" in info.inner_text()
    wide = pooled.locator("canvas.mm-insp-canvas")
    wide.scroll_into_view_if_needed()
    wide.click(position={"x": 10, "y": 10})
    assert nb.wait_for_kernel("w2._zoom", "{0: (0, 0)}", timeout=20) == "{0: (0, 0)}"
    nb.page.wait_for_function(
        "(e) => e.textContent.includes('full resolution')", arg=info.element_handle()
    )
    assert wide.evaluate("(c) => c.width") == 512  # 256 columns of 2 px
    assert wide.evaluate(_PAINTED) > 0


def _painted_share(canvas) -> float:
    canvas.element_handle().wait_for_element_state("visible")
    return canvas.evaluate(_PAINTED) / canvas.evaluate("(c) => c.width * c.height")


@pytest.mark.parametrize("frontend", FRONTENDS, indirect=True)
def test_saved_notebook_shows_the_latest_gradient_view(new_notebook, frontend):
    """Catches heatmaps missing from the saved widget state (the first version sent them only
    as messages: a reopened notebook showed empty panels) or a stale one (before the step)."""
    nb = new_notebook([SETUP, SHOW])
    nb.run_all()
    widget = nb.output(1).locator(".mm-insp")
    widget.locator(".mm-insp-step").click()
    nb.wait_for_kernel("w.step_info.get('steps')", "1", timeout=30)
    revision = int(nb.kernel_eval("w.revision"))
    assert revision >= 2  # the step computed the gradients again
    canvas = widget.locator('.mm-insp-layer[data-layer="0"] canvas.mm-insp-canvas')
    nb.page.wait_for_function("(c) => c.width > 0", arg=canvas.element_handle())
    gradient = np.array(
        ast.literal_eval(nb.kernel_eval("w.gradients['hidden'].tolist()")), np.float32
    )

    saved = nb.save()
    (state,) = [s for s in saved_widget_states(saved).values() if "_tiles" in s]
    tile = state["_tiles"]["0"]
    assert tile["header"]["revision"] == revision and tile["header"]["name"] == "hidden"
    arrays = dict(zip(tile["header"]["buffers"], tile["buffers"]))
    rows, cols = tile["header"]["rows"], tile["header"]["cols"]
    saved_gradient = np.frombuffer(arrays["g"], "<f4").reshape(rows, cols)
    np.testing.assert_array_equal(saved_gradient, gradient)  # the same float32 values, copied
    assert sorted(state["_tiles"]) == ["0", "1"]

    # Reopened: a fresh kernel that has run nothing; the heatmaps come from the file alone.
    nb.reopen()
    assert nb.kernel_eval("'w' in globals()") == "False"
    widget = nb.output(1).locator(".mm-insp")
    widget.wait_for(state="visible")
    canvas = widget.locator('.mm-insp-layer[data-layer="0"] canvas.mm-insp-canvas')
    nb.page.wait_for_function("(c) => c.width > 0", arg=canvas.element_handle())
    assert _painted_share(canvas) > 0.5
