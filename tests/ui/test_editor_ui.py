"""The mask editor in a real browser: JupyterLab + headless Chromium, the mask read back in the
kernel after clicks, drags, header clicks, toolbar buttons and undo/redo."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

try:  # conftest.py imports the harness the same way
    from .harness import FRONTENDS, saved_widget_states
except ImportError:
    from harness import FRONTENDS, saved_widget_states

pytestmark = pytest.mark.ui

DOCS = Path(__file__).resolve().parents[2] / "docs"

NET = """%%masked_net net --quiet --seed 0
input x 3
dense hidden 4 activation=sigmoid mask=[[1,0,0,0],[0,0,0,0],[0,0,1,1]]
dense out 2
loss mse
optimizer sgd learning_rate=0.1
train step"""

STEP = """import numpy as np
xb, yb = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
step(xb, yb)"""

HIDDEN = "net.get_layer('hidden').get_mask().astype(int).tolist()"

ROOT = ".mm-editor"


def wait_ready(nb, selector: str = ROOT) -> None:
    """Waits until the editor is drawn and has the kernel's state (its first reset)."""
    nb.page.wait_for_function(
        "(sel) => { const el = document.querySelector(sel);"
        " return !!el && el.dataset.version !== undefined && el.dataset.version !== 'null'; }",
        arg=selector,
    )


def point(nb, i: int, j: int) -> dict:
    return nb.page.evaluate(
        "([sel, i, j]) => document.querySelector(sel).__mm.grid.cellPoint(i, j)", [ROOT, i, j]
    )


def pixel(nb, i: int, j: int) -> list[int]:
    """RGB of the canvas pixel at the centre of cell (i, j), via getImageData."""
    return nb.page.evaluate(
        """async ([sel, i, j]) => {
          await new Promise((done) => requestAnimationFrame(() => done()));  // drawn
          const ed = document.querySelector(sel).__mm;
          const p = ed.grid.cellPoint(i, j);
          const ctx = ed.grid.main.getContext('2d');
          const d = ctx.getImageData(Math.floor(p.x * p.dpr), Math.floor(p.y * p.dpr), 1, 1).data;
          return [d[0], d[1], d[2]];
        }""",
        [ROOT, i, j],
    )


def click(nb, i: int, j: int, **kwargs) -> None:
    p = point(nb, i, j)
    nb.page.mouse.click(p["clientX"], p["clientY"], **kwargs)


def settled(nb) -> None:
    """Waits until the front end has no edit waiting for the kernel's answer."""
    nb.page.wait_for_function(
        "(sel) => document.querySelector(sel).dataset.pending === '0'", arg=ROOT
    )


def wait_pixel(nb, i: int, j: int, expected: list[int], timeout: float = 10.0) -> None:
    """Waits until cell (i, j) is drawn in ``expected`` colour: changes that come from the
    kernel (undo, redo) reach the canvas a moment after the kernel has them."""
    deadline = time.monotonic() + timeout
    while (seen := pixel(nb, i, j)) != expected:
        assert time.monotonic() < deadline, f"cell ({i}, {j}) drawn {seen}, expected {expected}"
        time.sleep(0.05)


def mask_of(nb, expr: str) -> list[list[int]]:
    return ast.literal_eval(nb.kernel_eval(expr))


def wait_mask(nb, expr: str, expected: list[list[int]]) -> None:
    nb.wait_for_kernel(expr, repr(expected))


@pytest.mark.parametrize("frontend", FRONTENDS, indirect=True)
def test_magic_net_click_drag_undo_graph(new_notebook, tmp_path, frontend):
    """%%masked_net + %mask_editor: edits reach the layer; the train step does not re-trace."""
    nb = new_notebook(["%load_ext maskmagic", NET, STEP, "ed = %mask_editor net.hidden\ned"])
    nb.run_all()
    wait_ready(nb)
    assert mask_of(nb, HIDDEN) == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]
    off, on = pixel(nb, 0, 1), pixel(nb, 0, 0)
    assert off != on

    click(nb, 0, 1)  # a click toggles one cell
    wait_mask(nb, HIDDEN, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]])
    assert pixel(nb, 0, 1) == on

    # Drag along row 1 with only two pointer events: the cells between are painted too.
    a, b = point(nb, 1, 0), point(nb, 1, 3)
    nb.page.mouse.move(a["clientX"], a["clientY"])
    nb.page.mouse.down()
    nb.page.mouse.move(b["clientX"], b["clientY"], steps=1)
    nb.page.mouse.up()
    wait_mask(nb, HIDDEN, [[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    assert [pixel(nb, 1, j) for j in range(4)] == [on] * 4

    nb.page.locator(f"{ROOT} .mm-undo").click()  # the toolbar's undo takes the drag back
    wait_mask(nb, HIDDEN, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]])
    nb.page.keyboard.press("Control+z")  # the editor has focus: undo the click
    wait_mask(nb, HIDDEN, [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]])
    nb.page.keyboard.press("Control+Shift+z")
    wait_mask(nb, HIDDEN, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]])
    settled(nb)
    wait_pixel(nb, 0, 1, on)
    wait_pixel(nb, 1, 1, off)

    # The graph view: clicking the line input 2 -> unit 0 connects them, in both views.
    target = nb.page.evaluate(
        """(sel) => {
          const hit = document.querySelector(sel + ' .mm-hit[data-k="8"]');
          const m = hit.getScreenCTM();
          const [x1, y1, x2, y2] = ['x1', 'y1', 'x2', 'y2'].map((a) => +hit.getAttribute(a));
          for (let t = 0.1; t < 0.95; t += 0.05) {
            const x = m.a * (x1 + t * (x2 - x1)) + m.c * (y1 + t * (y2 - y1)) + m.e;
            const y = m.b * (x1 + t * (x2 - x1)) + m.d * (y1 + t * (y2 - y1)) + m.f;
            if (document.elementFromPoint(x, y) === hit) return [x, y];
          }
          return null;
        }""",
        ROOT,
    )
    assert target is not None
    nb.page.mouse.click(*target)
    wait_mask(nb, HIDDEN, [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 1]])
    settled(nb)
    assert pixel(nb, 2, 0) == on
    assert nb.page.locator(f"{ROOT} .mm-edge.on").count() == 5

    # Hover readout: names, state and the weight from the layer.
    p = point(nb, 2, 0)
    nb.page.mouse.move(p["clientX"], p["clientY"])
    readout = nb.page.locator(f"{ROOT} .mm-readout")
    nb.page.wait_for_function(
        "(sel) => document.querySelector(sel + ' .mm-readout').textContent.includes('w =')",
        arg=ROOT,
    )
    weight = float(nb.kernel_eval("float(net.get_layer('hidden').kernel.numpy()[2, 0])"))
    text = readout.text_content()
    assert text.startswith("x[2] → hidden[0] · on · w = "), text
    assert float(text.split("w = ")[1]) == pytest.approx(weight, rel=1e-3)
    assert "12" in nb.page.locator(f"{ROOT} .mm-count").text_content()

    # The compiled train step uses the edited mask without re-tracing.
    assert nb.kernel_eval("ed.mask.astype(int).tolist()") == repr(mask_of(nb, HIDDEN))
    assert nb.kernel_eval("(step(xb, yb), step.trace_count)[1]") == "1"

    # The README's screenshot: written to docs/ when MASKMAGIC_UPDATE_DOCS=1.
    update = os.environ.get("MASKMAGIC_UPDATE_DOCS") == "1" and frontend == "lab"
    target = DOCS if update else tmp_path
    shot = nb.screenshot(target / "editor.png", selector=ROOT)
    assert shot.read_bytes().startswith(b"\x89PNG")


SMALL = """import numpy as np
from maskmagic.masks import NamedMask
from maskmagic.widgets.editor import MaskEditor
ed = MaskEditor(NamedMask(np.zeros((5, 6), bool), tuple("abcde"), tuple("uvwxyz")))
ed"""


@pytest.mark.parametrize("frontend", FRONTENDS, indirect=True)
def test_rectangle_headers_toolbar_and_kernel_side_edits(new_notebook, frontend):
    nb = new_notebook([SMALL, "ed"])  # two views of one editor
    nb.run_all()
    wait_ready(nb)
    ui = nb.output(0)  # the first view
    expr = "ed.mask.astype(int).tolist()"
    zeros = [[0] * 6 for _ in range(5)]

    a, b = point(nb, 1, 1), point(nb, 3, 4)  # shift-drag: a rectangle
    nb.page.keyboard.down("Shift")
    nb.page.mouse.move(a["clientX"], a["clientY"])
    nb.page.mouse.down()
    nb.page.mouse.move(b["clientX"], b["clientY"], steps=3)
    nb.page.mouse.up()
    nb.page.keyboard.up("Shift")
    rect = [[int(1 <= i <= 3 and 1 <= j <= 4) for j in range(6)] for i in range(5)]
    wait_mask(nb, expr, rect)

    box = ui.locator(".mm-rowhead").bounding_box()  # row header of row 0
    nb.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + point(nb, 0, 0)["y"])
    rect[0] = [1] * 6
    wait_mask(nb, expr, rect)
    box = ui.locator(".mm-colhead").bounding_box()  # column 5: not full -> on
    nb.page.mouse.click(box["x"] + point(nb, 0, 5)["x"], box["y"] + box["height"] / 2)
    for row in rect:
        row[5] = 1
    wait_mask(nb, expr, rect)

    ui.locator(".mm-invert").click()
    wait_mask(nb, expr, [[1 - v for v in row] for row in rect])
    ui.locator(".mm-none").click()
    wait_mask(nb, expr, zeros)
    ui.locator(".mm-identity").click()
    wait_mask(nb, expr, [[int(i == j) for j in range(6)] for i in range(5)])
    ui.locator(".mm-all").click()
    wait_mask(nb, expr, [[1] * 6 for _ in range(5)])
    ui.locator(".mm-density").fill("0")
    ui.locator(".mm-density").press("Enter")
    nb.wait_for_kernel("ed.random_density", "0.0")
    ui.locator(".mm-random").click()
    wait_mask(nb, expr, zeros)
    assert nb.kernel_eval("ed.undo_depth") == "8"
    settled(nb)

    # Kernel-side edits reach the canvas (and the count).
    off = pixel(nb, 4, 2)
    nb.kernel_exec("ed.toggle(4, 2)")
    nb.page.wait_for_function(
        "(sel) => document.querySelector(sel).dataset.count === '1'", arg=ROOT
    )
    assert pixel(nb, 4, 2) != off
    nb.kernel_exec("ed.undo()")
    nb.page.wait_for_function(
        "(sel) => document.querySelector(sel).dataset.count === '0'", arg=ROOT
    )
    assert pixel(nb, 4, 2) == off

    # A malformed edit (wrong shape) sent over the real comm is refused and changes nothing.
    nb.page.evaluate(
        """(sel) => document.querySelector(sel).__mm.store.model.send(
          {type: 'edit', client: 'bad', id: 1, shape: [9, 9], op: 'set', value: 1},
          undefined, [new Uint32Array([0, 3]).buffer])""",
        ROOT,
    )
    nb.kernel_exec("ed.toggle(0, 0); ed.toggle(0, 0)")  # a round trip after the bad message
    assert mask_of(nb, expr) == zeros
    assert nb.kernel_eval("ed.version") == "12"
    nb.output(1).locator(".mm-all").click()  # the second view edits; the first follows
    counts = "Array.from(document.querySelectorAll('.mm-editor'), (e) => e.dataset.count)"
    nb.page.wait_for_function(f"() => {counts}.join() === '30,30'")
    wait_mask(nb, expr, [[1] * 6 for _ in range(5)])


BIG = """import numpy as np
from maskmagic.widgets.editor import MaskEditor
big = MaskEditor(np.zeros((1024, 1024), bool))
big"""


def test_large_mask_draws_fast_and_sends_small_edits(page, new_notebook):
    frames: list[bytes] = []
    replies: list[bytes] = []

    def watch(ws):
        def sent(payload):
            frames.append(payload if isinstance(payload, bytes) else payload.encode())

        def received(payload):
            replies.append(payload if isinstance(payload, bytes) else payload.encode())

        ws.on("framesent", sent)
        ws.on("framereceived", received)

    page.on("websocket", watch)
    nb = new_notebook([BIG])
    started = time.perf_counter()
    nb.run_all()
    wait_ready(nb)
    shown = time.perf_counter() - started
    draw_ms = float(page.evaluate("(sel) => document.querySelector(sel).dataset.drawMs", ROOT))
    assert draw_ms < 1000, draw_ms
    assert shown < 30

    for _ in range(4):  # zoom in (x 1.5^4) around the centre and click one cell there
        page.locator(f"{ROOT} .mm-zoom-in").click()
    frames.clear()
    replies.clear()
    p = point(nb, 500, 520)
    assert p["scale"] > 2 and 0 < p["x"] < 520 and 0 < p["y"] < 520
    nb.page.mouse.click(p["clientX"], p["clientY"])
    nb.wait_for_kernel("(int(big.mask.sum()), bool(big.mask[500, 520]))", "(1, True)")
    settled(nb)  # the kernel's answer has arrived
    edits = [f for f in frames if b'"edit"' in f]
    assert len(edits) == 1 and len(edits[0]) < 4096, [len(f) for f in edits]
    changes = [f for f in replies if b'"change"' in f]
    assert changes and max(len(f) for f in changes) < 4096


def _saved_mask(notebook: dict) -> np.ndarray:
    """The mask held by the one editor's saved widget state."""
    editors = [s for s in saved_widget_states(notebook).values() if "_editor_id" in s]
    assert len(editors) == 1, editors
    rows, cols = editors[0]["shape"]
    bits = np.unpackbits(np.frombuffer(editors[0]["bits"], np.uint8))[: rows * cols]
    return bits.reshape(rows, cols).astype(int)


@pytest.mark.parametrize("frontend", FRONTENDS, indirect=True)
def test_saved_notebook_shows_the_edited_mask(new_notebook, frontend, tmp_path):
    """Catches edits missing from the saved widget state: the first version saved the mask as
    first displayed, so a reopened notebook or its HTML export showed the mask before edits."""
    nb = new_notebook([SMALL])
    nb.run_all()
    wait_ready(nb)
    expr = "ed.mask.astype(int).tolist()"
    click(nb, 1, 2)  # an edit in the browser
    expected = np.zeros((5, 6), int)
    expected[1, 2] = 1
    wait_mask(nb, expr, expected.tolist())
    nb.kernel_exec("ed.paint([(4, 0), (4, 5)])")  # an edit in the kernel
    expected[4, [0, 5]] = 1
    nb.page.wait_for_function(
        "(sel) => document.querySelector(sel).dataset.count === '3'", arg=ROOT
    )
    settled(nb)

    saved = nb.save()
    np.testing.assert_array_equal(_saved_mask(saved), expected)

    # The HTML export embeds that saved state (its widget view renders from it).
    exported = tmp_path / "exported.html"
    subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", "--output", str(exported),
         str(nb.server.root_dir / nb.path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    html = exported.read_text()
    (model_id,) = [k for k, v in saved_widget_states(saved).items() if "_editor_id" in v]
    assert "application/vnd.jupyter.widget-state+json" in html and model_id in html
    bits = saved["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert bits[model_id]["buffers"][0]["data"] in html

    # Reopened: a fresh kernel that has run nothing; the editor is drawn from the file alone.
    nb.reopen()
    assert nb.kernel_eval("'ed' in globals()") == "False"
    nb.page.wait_for_function(
        "(sel) => { const el = document.querySelector(sel);"
        " return !!el && el.dataset.count === '3'; }",
        arg=ROOT,
    )
    on, off = pixel(nb, 1, 2), pixel(nb, 0, 0)
    assert on != off
    drawn = [[int(pixel(nb, i, j) == on) for j in range(6)] for i in range(5)]
    assert drawn == expected.tolist()
