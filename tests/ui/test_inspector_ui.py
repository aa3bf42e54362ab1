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


CONV = """
import keras
import numpy as np
from maskmagic.layers import MaskedConv2D
from maskmagic.widgets.inspector import GradientInspector

table = np.ones((3, 4), bool)
table[1, 3] = table[0, 1] = False  # one block of channels: runs as one convolution (impl dense)
x_in = keras.Input((6, 6, 3))
c = MaskedConv2D(4, 3, mask=table, activation="tanh", name="c")(x_in)
model = keras.Model(x_in, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(c)))
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
y = rng.normal(size=(8, 2)).astype("float32")
w = GradientInspector(model, x, y)
w
"""


def _window_values(box) -> np.ndarray:
    """The numbers of a kernel window's table: the float32 values, exactly (data-value)."""
    cells = box.locator("table.mm-insp-window-values tr").evaluate_all(
        "(rows) => rows.map((r) => [...r.cells].map((c) => Number(c.dataset.value)))"
    )
    return np.array(cells, np.float64)


def _kernel_window(nb, i: int, j: int, view: str) -> np.ndarray:
    expr = f"w.kernel_window('c', {i}, {j}, {view!r}).tolist()"
    return np.array(ast.literal_eval(nb.kernel_eval(expr)), np.float64)


@pytest.mark.parametrize("frontend", FRONTENDS, indirect=True)
def test_clicking_a_conv_pair_shows_its_kernel_window(new_notebook, frontend):
    """Catches: a click on a conv cell that asks for nothing (or for another pair), a window the
    front end does not draw, values that differ from ``kernel_window`` (the float32 values come
    back exactly), a masked pair with a non-zero gradient, and a view switch that leaves the
    window showing the previous view."""
    nb = new_notebook([CONV])
    nb.run_all()
    widget = nb.output(0).locator(".mm-insp")
    widget.wait_for(state="visible")
    canvas = widget.locator('.mm-insp-layer[data-layer="0"] canvas.mm-insp-canvas')
    nb.page.wait_for_function("(c) => c.width > 0", arg=canvas.element_handle(), timeout=30_000)
    assert canvas.evaluate("(c) => c.width") == 4 * 32  # 3 x 4 table of 32 px cells + bias row
    box = widget.locator('.mm-insp-layer[data-layer="0"] .mm-insp-window')

    def click(i: int, j: int) -> None:
        canvas.click(position={"x": (j + 0.5) * 32, "y": (i + 0.5) * 32})
        assert nb.wait_for_kernel("w.window_shown", f"('c', {i}, {j})", timeout=20)
        nb.page.wait_for_function(
            "([b, i, j]) => !b.hidden && b.dataset.i === i && b.dataset.j === j",
            arg=[box.element_handle(), str(i), str(j)],
        )

    click(2, 2)
    assert "3×3 taps" in box.inner_text()
    shown = _window_values(box)
    assert shown.shape == (3, 3) and np.count_nonzero(shown) == 9
    np.testing.assert_array_equal(shown, _kernel_window(nb, 2, 2, "gradient"))
    window_canvas = box.locator("canvas.mm-insp-window-canvas")
    assert window_canvas.evaluate(_PAINTED) > 0.9 * window_canvas.evaluate(
        "(c) => c.width * c.height"
    )

    click(1, 3)  # masked: exactly zero gradient, and the would-be gradient in that view
    assert np.all(_window_values(box) == 0.0)
    widget.locator('.mm-insp-view[data-view="would_be"]').click()
    nb.page.wait_for_function(
        "(b) => b.dataset.view === 'would_be'", arg=box.element_handle(), timeout=20_000
    )
    would_be = _window_values(box)
    assert np.all(would_be != 0.0)
    np.testing.assert_array_equal(would_be, _kernel_window(nb, 1, 3, "would_be"))


# The same net, with an op that holds out[0] on four reference inputs.
HELD = (
    SETUP
    + "from maskmagic.training import TrainOp\n"
    + 'held = TrainOp(net, "mse", "sgd", hold="out[0]", hold_on=x[:4], name="held")\n'
)
SHOW_HELD = "w = GradientInspector(net, x, y, op=held)\nw"
SHOW_PLAIN = 'w_plain = GradientInspector(net, x, y, op=ops["keep_first"])\nw_plain'

# A checksum of a canvas's pixels (changes when any pixel does).
_CHECKSUM = """(c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let k = 0; k < d.length; k++) h = (Math.imul(h, 31) + d[k]) >>> 0;
  return h;
}"""


@pytest.mark.parametrize("frontend", ["lab"], indirect=True)
def test_projected_update_view_of_a_held_op(new_notebook, frontend):
    """Catches: no projected-update toggle for an op with hold= (or one offered without it), a
    toggle that does not reach the kernel's ``view``, heatmaps that do not redraw from the
    projected values (tiles without ``prj``), values in the tooltip that differ from
    ``projected_gradients``, and a missing held-drift readout after a step."""
    nb = new_notebook([HELD, SHOW_HELD, SHOW_PLAIN])
    nb.run_all()
    plain = nb.output(2).locator(".mm-insp")
    plain.wait_for(state="visible")
    assert plain.locator('.mm-insp-view[data-view="projected"]').is_hidden()  # no hold=: no view

    widget = nb.output(1).locator(".mm-insp")
    widget.wait_for(state="visible")
    canvas = widget.locator('.mm-insp-layer[data-layer="0"] canvas.mm-insp-canvas')
    nb.page.wait_for_function("(c) => c.width > 0", arg=canvas.element_handle(), timeout=30_000)
    before = canvas.evaluate(_CHECKSUM)
    toggle = widget.locator('.mm-insp-view[data-view="projected"]')
    assert toggle.is_visible() and nb.kernel_eval("w.has_hold") == "True"

    toggle.click()
    assert nb.wait_for_kernel("w.view", "'projected'") == "'projected'"
    nb.page.wait_for_function(
        f"([c, before]) => ({_CHECKSUM})(c) !== before",
        arg=[canvas.element_handle(), before],
        timeout=20_000,
    )
    assert "mm-insp-active" in (toggle.get_attribute("class") or "")

    # The tooltip of connection (i, j) = (2, 3) shows the kernel's projected value.
    box = canvas.bounding_box()
    cell = box["width"] / 10
    nb.page.mouse.move(box["x"] + 3.5 * cell, box["y"] + 2.5 * cell)
    tip = widget.locator('.mm-insp-layer[data-layer="0"] .mm-insp-tip')
    tip.wait_for(state="visible")
    projected = float(nb.kernel_eval("float(w.projected_gradients['hidden'][2, 3])"))
    gradient = float(nb.kernel_eval("float(w.gradients['hidden'][2, 3])"))
    assert projected != gradient
    line = next(s for s in tip.inner_text().splitlines() if s.startswith("projected "))
    assert float(line.split()[1]) == pytest.approx(projected, rel=1e-3)

    # Back to the gradient view: the first heatmap again, pixel for pixel.
    widget.locator('.mm-insp-view[data-view="gradient"]').click()
    assert nb.wait_for_kernel("w.view", "'gradient'") == "'gradient'"
    nb.page.wait_for_function(
        f"([c, before]) => ({_CHECKSUM})(c) === before",
        arg=[canvas.element_handle(), before],
        timeout=20_000,
    )

    # A step: the held units' drift on the reference and fresh inputs; then the screenshot.
    widget.locator(".mm-insp-step").click()
    assert nb.wait_for_kernel("w.step_info.get('steps')", "1", timeout=30) == "1"
    widget.locator(".mm-insp-hold").wait_for(state="visible")
    assert "reference inputs" in widget.locator(".mm-insp-hold").inner_text()
    toggle.click()
    assert nb.wait_for_kernel("w.view", "'projected'") == "'projected'"
    nb.page.mouse.move(0, 0)
    nb.screenshot(REPO_ROOT / "docs" / "inspector_projected.png", selector=".mm-insp")
