"""Benchmark of the mask editor: draw time in headless Chromium and message sizes of an edit.

Run from the repository root (needs jupyterlab, playwright and Debian's /usr/bin/chromium):

    python bench/bench_editor.py [--sizes 64 256 1024 2048]

For each n x n mask it opens one JupyterLab notebook (tests/ui/harness.py), shows a MaskEditor,
reads the editor's own timings (``data-draw-ms``: filling the pixel buffer and drawing it, until
the pixels can be read back), clicks one cell and measures the websocket frames: the ``edit``
message the browser sends and the ``change`` message the kernel answers with. It also times the
kernel's handling of a one-cell edit in this process, unbound and bound to a MaskedDense.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tests.ui import harness  # noqa: E402

SEL = ".mm-editor"


def kernel_side(n: int, repeats: int = 20) -> tuple[float, float]:
    """Milliseconds to apply a one-cell front-end edit: (plain matrix, bound MaskedDense)."""
    import keras

    from maskmagic.layers import MaskedDense
    from maskmagic.widgets.editor import MaskEditor

    def timed(editor) -> float:
        editor.send = lambda content, buffers=None: None
        times = []
        for k in range(repeats):
            content = {"type": "edit", "client": "b", "id": k + 1, "shape": [n, n], "op": "set",
                       "value": k % 2}  # fmt: skip
            buffers = [np.array([n * (n // 2) + 3, 1], "<u4").tobytes()]
            t0 = time.perf_counter()
            editor._on_front_message(editor, content, buffers)
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    plain = timed(MaskEditor(np.zeros((n, n), bool)))
    layer = MaskedDense(n)
    layer.build((None, n))
    bound = timed(MaskEditor(layer))
    keras.backend.clear_session()
    return plain, bound


def browser_side(page, server, n: int) -> dict:
    sent: list[bytes] = []
    received: list[bytes] = []

    def watch(ws):
        ws.on("framesent", lambda p: sent.append(p if isinstance(p, bytes) else p.encode()))
        ws.on("framereceived", lambda p: received.append(p if isinstance(p, bytes) else p.encode()))

    page.on("websocket", watch)
    cell = (
        "import numpy as np\nfrom maskmagic.widgets.editor import MaskEditor\n"
        f"ed = MaskEditor(np.random.default_rng(0).random(({n}, {n})) < 0.1)\ned"
    )
    nb = harness.open_notebook(page, server, [cell], name=f"bench-{n}-{time.time_ns()}")
    t0 = time.perf_counter()
    nb.run_all()
    page.wait_for_function(
        "(s) => { const e = document.querySelector(s); return e && e.dataset.version === '0'; }",
        arg=SEL,
        timeout=60_000,
    )
    shown = time.perf_counter() - t0
    first_draw = float(page.evaluate("(s) => document.querySelector(s).dataset.drawMs", SEL))
    render = float(page.evaluate("(s) => document.querySelector(s).dataset.renderMs", SEL))
    # A full redraw (all pixels) and a one-cell redraw, timed in the page.
    redraw = page.evaluate(
        """(s) => {
          const ed = document.querySelector(s).__mm;
          const t = [];
          for (let r = 0; r < 5; r++) { const t0 = performance.now(); ed.grid.rebuild();
            t.push(performance.now() - t0); }
          const one = [];
          for (let r = 0; r < 20; r++) {
            const t0 = performance.now();
            ed.grid.update([r]); ed.grid.draw();
            ed.grid.main.getContext('2d').getImageData(0, 0, 1, 1);
            one.push(performance.now() - t0);
          }
          const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
          return [med(t), med(one)];
        }""",
        SEL,
    )
    sent.clear()
    received.clear()
    p = page.evaluate(
        "([s, i]) => document.querySelector(s).__mm.grid.cellPoint(i, i)", [SEL, n // 2]
    )
    page.mouse.click(p["clientX"], p["clientY"])
    nb.wait_for_kernel("ed.version", "1", timeout=30)
    page.wait_for_function(
        "(s) => document.querySelector(s).dataset.pending === '0'", arg=SEL, timeout=30_000
    )
    edit = [len(f) for f in sent if b'"edit"' in f]
    change = [len(f) for f in received if b'"change"' in f]
    nb.close_client()
    server.shutdown_kernels()
    page.remove_listener("websocket", watch)
    return {
        "shown_s": shown,
        "first_draw_ms": first_draw,
        "render_ms": render,
        "full_redraw_ms": redraw[0],
        "cell_redraw_ms": redraw[1],
        "edit_bytes": edit[0] if edit else -1,
        "change_bytes": change[0] if change else -1,
        "bitmap_bytes": (n * n + 7) // 8,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--no-kernel-timing", action="store_true")
    parser.add_argument("--save", action="store_true", help="write bench/results/editor-DATE.json")
    args = parser.parse_args()
    load = [os.getloadavg()]
    if not os.path.exists(harness.CHROMIUM):
        sys.exit(harness.SKIP_REASON)
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        server = harness.start_jupyter_server(Path(tmp))
        browser = harness.launch_browser(pw)
        try:
            for n in args.sizes:
                context = browser.new_context(viewport=harness.VIEWPORT)
                page = context.new_page()
                result = browser_side(page, server, n)
                context.close()
                if not args.no_kernel_timing:
                    result["kernel_ms"], result["kernel_bound_ms"] = kernel_side(n)
                rows.append((n, result))
                print(f"  {n} x {n}: done", file=sys.stderr)
        finally:
            browser.close()
            server.stop()

    head = (
        f"{'mask':>11} | {'first draw':>10} | {'view built':>10} | {'full redraw':>11} | "
        f"{'1-cell redraw':>13} | {'shown after':>11} | {'edit sent':>9} | {'reply':>7} | "
        f"{'bitmap':>8} | {'kernel edit':>11} | {'bound edit':>10}"
    )
    print(head)
    print("-" * len(head))
    for n, r in rows:
        k = r.get("kernel_ms", float("nan"))
        kb = r.get("kernel_bound_ms", float("nan"))
        print(
            f"{f'{n} x {n}':>11} | {r['first_draw_ms']:>7.1f} ms | {r['render_ms']:>7.1f} ms | "
            f"{r['full_redraw_ms']:>8.1f} ms | {r['cell_redraw_ms']:>10.2f} ms | "
            f"{r['shown_s']:>9.2f} s | {r['edit_bytes']:>7} B | {r['change_bytes']:>5} B | "
            f"{r['bitmap_bytes']:>6} B | {k:>8.2f} ms | {kb:>7.2f} ms"
        )
    print(
        "\nfirst draw: pixel buffer filled and drawn until readable (headless Chromium, no GPU);"
        "\nview built: the whole widget view, first draw included; shown after: from running the"
        "\ncell to the editor holding the kernel's state; edit sent / reply: websocket frames of a"
        "\none-cell click (the Jupyter message envelope included); kernel edit: handling the edit"
        "\nin the kernel (median), bound = also MaskedDense.set_mask."
    )
    if args.save:
        from record import save

        result = [{"size": n, **r} for n, r in rows]
        save("editor", "bench_editor.py", sys.argv[1:], result, [*load, os.getloadavg()])


if __name__ == "__main__":
    main()
