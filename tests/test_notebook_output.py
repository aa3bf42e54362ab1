"""What a new user sees in a notebook run by a real kernel: no TensorFlow start-up banners under
`%load_ext maskmagic` and the first TensorFlow cells, and `fit` progress like Keras'."""

from __future__ import annotations

import re

import nbclient
import nbformat
import pytest

from maskmagic import _quiet

BANNER = (
    "I0000 00:00:1796098899.439338   11587 cudart_stub.cc:31] Could not find cuda drivers on your"
    " machine, GPU will not be used."
)
CELLS = [
    "%load_ext maskmagic",
    "import tensorflow as tf\nz = tf.constant(1.0) + 1",
    "%%masked_net net --quiet --seed 0\ninput x 3\ndense out 2\nloss mse\ntrain step",
    "import numpy as np\nx, y = np.ones((64, 3), 'float32'), np.zeros((64, 2), 'float32')\n"
    "h1 = step.fit(x, y, epochs=4, batch_size=16)",
    "h2 = step.fit(x, y, epochs=3, batch_size=16, verbose=2)",
    "h0 = step.fit(x, y, epochs=2, verbose=0)",
    "import os\nfrom maskmagic._quiet import captured_stderr\nwith captured_stderr():\n"
    f"    os.write(2, b'{BANNER}\\nreal problem\\n')",
]

# Any trace of TensorFlow's C++ start-up logging, whatever its exact wording.
TF_LOG = re.compile(r"absl::InitializeLog|oneDNN|cudart_stub|cuInit|cpu_feature_guard|\.cc:\d+\]")


@pytest.fixture(scope="module")
def notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    return nb


def _texts(output: dict) -> str:
    return output.get("text", "") + "".join(str(v) for v in output.get("data", {}).values())


@pytest.mark.slow
def test_no_tensorflow_log_lines_in_the_first_cells(notebook):
    """Catches the banners (or the cuInit probe error) reaching the notebook."""
    for cell in notebook.cells[:3]:
        assert cell.outputs == [], cell.outputs
    everything = "".join(_texts(o) for cell in notebook.cells for o in cell.outputs)
    assert not TF_LOG.search(everything.replace(BANNER, "")), everything


@pytest.mark.slow
def test_an_unknown_stderr_line_still_shows(notebook):
    outputs = notebook.cells[6].outputs
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outputs] == [
        ("stream", "stderr", "real problem\n")
    ]
    assert _quiet.is_banner(BANNER)


@pytest.mark.slow
def test_fit_verbose_1_is_one_bar_widget_that_ends_on_the_last_epoch(notebook):
    """Catches one bar per epoch in notebooks (the first version showed 20 for epochs=20)."""
    outputs = notebook.cells[3].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    view = outputs[0].data["application/vnd.jupyter.widget-view+json"]
    state = notebook.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    models = state[view["model_id"]]["state"]["children"]
    parts = [state[m.removeprefix("IPY_MODEL_")]["state"] for m in models]
    shown = " ".join(str(p.get("value", "")) for p in parts).replace("\u2007", " ")  # tqdm's spaces
    assert "step epoch 4/4" in shown and "loss=" in shown and "16/16" in shown, shown
    progress = [p for p in parts if "max" in p]
    assert progress and progress[0]["value"] == progress[0]["max"] == 16


@pytest.mark.slow
def test_fit_verbose_2_prints_one_line_per_epoch_and_0_nothing(notebook):
    outputs = notebook.cells[4].outputs  # one stream message per epoch: the notebook joins them
    assert {(o.output_type, o.get("name")) for o in outputs} == {("stream", "stdout")}
    lines = "".join(o.text for o in outputs).splitlines()
    assert [line.split(" - ")[0] for line in lines] == [f"step epoch {e}/3" for e in (1, 2, 3)]
    assert notebook.cells[5].outputs == []
