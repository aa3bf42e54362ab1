"""MaskEditor on the kernel side: the Python API, the layer binding (no re-trace), the message
protocol (edits, acks, malformed messages), undo/redo, observers and the static PNG fallback."""

from __future__ import annotations

import base64
import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from keras.layers import Dense

from maskmagic.errors import MaskError, MaskMagicError, SelectorError
from maskmagic.masks import NamedMask
from maskmagic.masks.check import unpack_bits
from maskmagic.training import TrainOp
from maskmagic.widgets.editor import MaskEditor, mask_image, state
from tests.conftest import make_342
from tests.magics import line_magic

EYE34 = np.eye(3, 4, dtype=bool)


class Spy:
    """Records what an editor sends to its front ends (custom messages and state updates)."""

    def __init__(self, editor: MaskEditor) -> None:
        self.messages: list[tuple[dict, list[bytes]]] = []
        self.states: list[str] = []
        editor.send = lambda content, buffers=None: self.messages.append(
            (content, [bytes(b) for b in buffers or []])
        )
        original = editor.send_state

        def send_state(key=None):
            self.states.extend([key] if isinstance(key, str) else list(key or ["*"]))
            return original(key)

        editor.send_state = send_state

    @property
    def last(self) -> tuple[dict, list[bytes]]:
        return self.messages[-1]


def edit_message(op="set", value=1, runs=((0, 1),), shape=(3, 4), client="c1", id=1):
    content = {"type": "edit", "client": client, "id": id, "shape": list(shape), "op": op}
    if value is not None:
        content["value"] = value
    return content, [np.asarray(runs, dtype="<u4").tobytes()]


def flipped_cells(message: tuple[dict, list[bytes]], cells: int) -> np.ndarray:
    content, (payload,) = message
    assert content["op"] == "flip"
    return state.cells_of(np.frombuffer(payload, "<u4").reshape(-1, 2))


# ---------------------------------------------------------------------- construction


def test_from_array_lists_sparse_and_named_mask():
    ed = MaskEditor(EYE34)
    assert ed.shape == (3, 4) and ed.mask.dtype == bool and ed.count == 3
    np.testing.assert_array_equal(ed.mask, EYE34)
    assert ed.layer is None and not ed.bound and ed.graph
    np.testing.assert_array_equal(unpack_bits(ed.bits, (3, 4)), EYE34)
    assert ed.density == pytest.approx(0.25)
    np.testing.assert_array_equal(MaskEditor([[0, 1], [1, 0]]).mask, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(MaskEditor(sp.csr_array(EYE34)).mask, EYE34)
    named = MaskEditor(NamedMask(EYE34, ("a", "b", "c"), ("p", "q", "r", "s")))
    assert named.input_names == ["a", "b", "c"] and named.unit_names == ["p", "q", "r", "s"]
    assert MaskEditor(EYE34, unit_names="wxyz").unit_names == ["w", "x", "y", "z"]
    big = MaskEditor(np.zeros((40, 3)))
    assert not big.graph and big.shape == (40, 3)
    assert repr(ed) == "MaskEditor(3 x 4, 3 of 12 on)"


def test_the_editor_keeps_its_own_copy():
    source = EYE34.copy()
    ed = MaskEditor(source)
    ed.toggle(0, 0)
    assert source[0, 0]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (np.zeros(3), ["2-D", "(3,)"]),
        (np.zeros((2, 2, 2)), ["2-D", "(2, 2, 2)"]),
        ([[0, 1], [1]], ["2-D"]),
        (np.zeros((0, 3)), ["at least one row"]),
        ([[0, 2], [1, 0]], ["0", "1", "2"]),
        ([[0, np.nan]], ["nan"]),
    ],
)
def test_bad_matrices_are_refused(value, words):
    with pytest.raises(MaskMagicError) as info:
        MaskEditor(value)
    for word in words:
        assert word in str(info.value)


def test_masks_above_the_size_limit_are_refused_without_densifying(monkeypatch):
    class HugeSparseLayer:  # a sparse-impl layer: get_mask() is a csr_array
        name, input_names, unit_names = "huge", None, None

        def get_mask(self):
            return sp.csr_array((100_000, 100_000), dtype=bool)

        def set_mask(self, mask):
            raise AssertionError("never called")

    with pytest.raises(MaskError, match=r"100000 x 100000 = 10,000,000,000 cells.*at most"):
        MaskEditor(HugeSparseLayer())
    monkeypatch.setattr(state, "MAX_CELLS", 100)
    with pytest.raises(MaskError, match="at most 100"):
        MaskEditor(np.zeros((11, 10)))


def test_names_must_fit_and_graph_must_be_small():
    with pytest.raises(MaskError, match="input_names has 2 names, expected 3"):
        MaskEditor(EYE34, input_names=["a", "b"])
    with pytest.raises(MaskMagicError, match="up to 32 x 32"):
        MaskEditor(np.zeros((33, 2)), graph=True)
    ed = MaskEditor(np.zeros((33, 2)))
    with pytest.raises(MaskMagicError, match="up to 32 x 32"):
        ed.graph = True


def test_plain_dense_and_unbuilt_layers_are_refused():
    with pytest.raises(MaskMagicError, match="Dense, which has no mask"):
        MaskEditor(Dense(3))
    from maskmagic.layers import MaskedDense

    with pytest.raises(MaskMagicError, match="not built"):
        MaskEditor(MaskedDense(3))
    with pytest.raises(MaskMagicError, match=r"model 'net'.*\(hidden, out\)"):
        MaskEditor(make_342())


# ---------------------------------------------------------------------- Python API


def test_mask_is_read_only_and_assignment_is_validated():
    ed = MaskEditor(EYE34)
    with pytest.raises(ValueError, match="read-only"):
        ed.mask[0, 1] = True
    ed.mask = np.ones((3, 4))
    assert ed.count == 12 and ed.undo_depth == 1
    ed.mask = sp.csr_array(EYE34)
    np.testing.assert_array_equal(ed.mask, EYE34)
    with pytest.raises(MaskError, match=r"shape"):
        ed.mask = np.ones((4, 3))
    with pytest.raises(MaskError):
        ed.mask = [[0, 1, 2, 0]] * 3
    np.testing.assert_array_equal(ed.mask, EYE34)
    with pytest.raises(MaskMagicError, match="fixed"):
        ed.shape = (4, 3)


def test_toggle_paint_fill_invert_identity_randomize():
    ed = MaskEditor(np.zeros((3, 4)))
    assert ed.toggle(1, 2) is True and ed.mask[1, 2]
    assert ed.toggle(np.int64(1), 2) is False and not ed.mask[1, 2]
    assert ed.paint([(0, 0), (2, 3), (0, 0)], True) == 2
    assert ed.paint(np.array([[0, 0], [1, 1]]), 0) == 1
    assert ed.paint([]) == 0
    np.testing.assert_array_equal(np.argwhere(ed.mask), [[2, 3]])
    ed.fill(True)
    assert ed.count == 12
    ed.invert()
    assert ed.count == 0
    ed.identity()
    np.testing.assert_array_equal(ed.mask, EYE34)
    ed.randomize(0.5, seed=3)
    first = ed.mask.copy()
    ed.randomize(0.5, seed=3)
    np.testing.assert_array_equal(ed.mask, first)
    ed.random_density = 0.0
    ed.randomize()
    assert ed.count == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda ed: ed.toggle(3, 0), "i=3 is outside"),
        (lambda ed: ed.toggle(0, -1), "j=-1 is outside"),
        (lambda ed: ed.toggle(True, 0), "integer"),
        (lambda ed: ed.toggle(0.0, 0), "integer"),
        (lambda ed: ed.paint([(0, 4)]), r"cell \(0, 4\) is outside"),
        (lambda ed: ed.paint([(0, 1, 2)]), "pairs"),
        (lambda ed: ed.paint([(0.5, 1)]), "pairs"),
        (lambda ed: ed.paint([(0, 1)], 2), "0/1"),
        (lambda ed: ed.randomize(1.5), "density"),
    ],
)
def test_bad_arguments_raise_and_change_nothing(call, match):
    ed = MaskEditor(EYE34)
    with pytest.raises(MaskError, match=match):
        call(ed)
    np.testing.assert_array_equal(ed.mask, EYE34)
    assert ed.version == 0 and ed.undo_depth == 0


def test_random_density_is_validated():
    ed = MaskEditor(EYE34)
    with pytest.raises(MaskMagicError, match="between 0 and 1"):
        ed.random_density = 1.5


def test_undo_redo_stacks():
    ed = MaskEditor(np.zeros((3, 4)))
    assert ed.undo() is False and ed.redo() is False
    ed.toggle(0, 0)
    ed.paint([(1, 1), (2, 2)])
    ed.invert()
    assert (ed.undo_depth, ed.redo_depth) == (3, 0)
    assert ed.undo() and ed.count == 3
    assert ed.undo() and ed.count == 1
    assert (ed.undo_depth, ed.redo_depth) == (1, 2)
    assert ed.redo() and ed.count == 3
    ed.toggle(0, 3)  # a new change forgets what could be redone
    assert (ed.undo_depth, ed.redo_depth) == (3, 0) and ed.redo() is False
    while ed.undo():
        pass
    assert ed.count == 0 and ed.redo_depth == 3
    ed.mask = np.ones((3, 4))  # assignments are undoable too
    assert ed.undo() and ed.count == 0


def test_history_limits_and_compact_records():
    history = state.History(cells=64, limit=2)
    for k in range(3):
        history.record(np.array([k]))
    assert history.undo_depth == 2
    np.testing.assert_array_equal(history.undo(), [2])
    history.record(np.arange(40))  # more indices than the packed bitmap: kept as bits
    assert history._undo[-1][0] == "bits"
    np.testing.assert_array_equal(history.undo(), np.arange(40))
    np.testing.assert_array_equal(history.redo(), np.arange(40))
    capped = state.History(cells=1 << 20, max_bytes=100)
    for k in range(30):
        capped.record(np.array([k, k + 1]))
    assert capped.undo_depth == 12  # 8 bytes each
    capped.clear()
    assert capped.undo_depth == capped.redo_depth == 0


def test_observers_see_each_change_once():
    ed = MaskEditor(np.zeros((3, 4)))
    seen = []
    ed.observe(lambda change: seen.append((change["old"].sum(), change["new"].sum())), "mask")
    ed.toggle(0, 0)
    ed.paint([(1, 1), (1, 2)])
    ed.undo()
    ed._on_front_message(ed, *edit_message(runs=[(4, 4)]))
    assert seen == [(0, 1), (1, 3), (3, 1), (1, 5)]
    ed.paint([(0, 0)], True)  # no change: no notification
    ed._on_front_message(ed, *edit_message(runs=[(0, 1)], id=2))
    assert len(seen) == 4


def test_observers_run_after_the_layer_has_the_mask():
    model = make_342()
    layer = model.get_layer("hidden")
    ed = MaskEditor(layer)
    seen = []
    ed.observe(lambda change: seen.append(layer.get_mask()[0, 0]), "mask")
    ed.toggle(0, 0)
    assert seen == [False]


# ---------------------------------------------------------------------- sync to front ends


def test_changes_go_out_as_small_messages_not_state_updates():
    ed = MaskEditor(np.zeros((1024, 1024)))
    spy = Spy(ed)
    ed.toggle(3, 5)
    content, (payload,) = spy.last
    assert content == {"type": "change", "version": 1, "client": None, "id": None,
                       "op": "flip", "count": 1}  # fmt: skip
    assert payload == np.array([3 * 1024 + 5, 1], "<u4").tobytes()
    assert "bits" not in spy.states and "version" not in spy.states
    assert "undo_depth" in spy.states
    np.testing.assert_array_equal(unpack_bits(ed.bits, (1024, 1024)), ed.mask)  # yet current
    ed.invert()  # every cell flips: one run
    content, (payload,) = spy.last
    assert content["op"] == "flip" and payload == np.array([0, 1 << 20], "<u4").tobytes()
    ed.randomize(0.5, seed=0)  # scattered: the whole bitmap is smaller than the runs
    content, (payload,) = spy.last
    assert content["op"] == "replace" and len(payload) == 1024 * 1024 // 8
    assert "bits" not in spy.states
    ed.send_state()  # a page reload asks for the state: it has the current mask
    np.testing.assert_array_equal(unpack_bits(ed.bits, (1024, 1024)), ed.mask)


def test_front_end_edits_set_flip_replace_and_acks():
    ed = MaskEditor(np.zeros((3, 4)))
    spy = Spy(ed)
    ed._on_front_message(ed, *edit_message(runs=[(0, 2), (5, 3)], id=1))
    np.testing.assert_array_equal(ed.mask.ravel().nonzero()[0], [0, 1, 5, 6, 7])
    content, _ = spy.last
    assert (content["client"], content["id"], content["version"], content["count"]) == (
        "c1", 1, 1, 5)  # fmt: skip
    ed._on_front_message(ed, *edit_message("flip", None, runs=[(0, 12)], id=2))
    assert ed.count == 7
    bits = np.packbits(EYE34.ravel()).tobytes()
    content = edit_message("replace", None, id=3)[0]
    ed._on_front_message(ed, content, [memoryview(bits)])
    np.testing.assert_array_equal(ed.mask, EYE34)
    ed._on_front_message(ed, *edit_message(value=0, runs=[(1, 2)], id=4))  # no change: still acked
    content, (payload,) = spy.last
    assert (content["id"], content["version"], payload) == (4, 4, b"")
    assert ed.undo_depth == 3
    ed._on_front_message(ed, {"type": "undo"}, [])
    assert ed.count == 7
    ed._on_front_message(ed, {"type": "redo"}, [])
    np.testing.assert_array_equal(ed.mask, EYE34)
    ed._on_front_message(ed, {"type": "sync"}, [])
    content, (payload,) = spy.last
    assert content == {"type": "reset", "version": 6, "acked": {"c1": 4}, "count": 3}
    np.testing.assert_array_equal(unpack_bits(payload, (3, 4)), EYE34)


def test_a_one_cell_edit_on_1024x1024_is_a_few_bytes():
    content, buffers = edit_message(runs=[(1024 * 512 + 7, 1)], shape=(1024, 1024))
    assert len(json.dumps(content)) + sum(len(b) for b in buffers) < 200
    ed = MaskEditor(np.zeros((1024, 1024)))
    spy = Spy(ed)
    ed._on_front_message(ed, content, buffers)
    reply, payloads = spy.last
    assert ed.mask[512, 7] and len(json.dumps(reply)) + len(payloads[0]) < 200


MALFORMED = [
    ("not a dict", ["edit"], None),
    ("unknown type", {"type": "paint"}, None),
    ("no client", {**edit_message()[0], "client": None}, "'client'"),
    ("bool id", {**edit_message()[0], "id": True}, "'id'"),
    ("wrong shape", {**edit_message()[0], "shape": [4, 3]}, "'shape'"),
    ("bad op", {**edit_message()[0], "op": "xor"}, "'op'"),
    ("bad value", {**edit_message()[0], "value": 2}, "'value'"),
    ("float value", {**edit_message()[0], "value": 1.0}, "'value'"),
]


@pytest.mark.parametrize(("label", "content", "word"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_warn_and_change_nothing(label, content, word):
    ed = MaskEditor(EYE34)
    spy = Spy(ed)
    with pytest.warns(UserWarning, match="refused a message from the front end") as record:
        ed._on_front_message(ed, content, edit_message()[1])
    if word:
        assert word in str(record[0].message)
    np.testing.assert_array_equal(ed.mask, EYE34)
    assert (ed.version, ed.undo_depth) == (0, 0)
    assert all(m[0]["type"] == "reject" for m in spy.messages)


@pytest.mark.parametrize(
    ("buffers", "words"),
    [
        ([], "0 buffers"),
        ([b"\x00" * 8, b"\x00" * 8], "2 buffers"),
        ([[0, 1]], "type list"),
        ([b"\x00" * 7], "multiple of 8"),
        ([np.array([10, 3], "<u4").tobytes()], "goes past the 12 cells"),
        ([np.array([0, 0], "<u4").tobytes()], "length 0"),
        ([np.array([0, 3, 2, 1], "<u4").tobytes()], "overlap"),
        ([np.array([5, 1, 0, 1], "<u4").tobytes()], "not sorted"),
        ([np.zeros(13 * 2, "<u4").tobytes()], "13 runs"),
    ],
)
def test_malformed_run_buffers_are_refused(buffers, words):
    ed = MaskEditor(EYE34)
    spy = Spy(ed)
    with pytest.warns(UserWarning, match=words):
        ed._on_front_message(ed, edit_message()[0], buffers)
    np.testing.assert_array_equal(ed.mask, EYE34)
    content, _ = spy.last
    assert content["type"] == "reject" and content["id"] == 1 and words in content["reason"]


def test_malformed_replace_and_weight_requests_are_refused():
    ed = MaskEditor(EYE34)
    content = edit_message("replace", None)[0]
    with pytest.warns(UserWarning, match="replace bitmap has 1 bytes, expected 2"):
        ed._on_front_message(ed, content, [b"\x00"])
    with pytest.warns(UserWarning, match="'i' is 3"):
        ed._on_front_message(ed, {"type": "weight", "i": 3, "j": 0}, [])
    with pytest.warns(UserWarning, match="'j' is '0'"):
        ed._on_front_message(ed, {"type": "weight", "i": 0, "j": "0"}, [])
    np.testing.assert_array_equal(ed.mask, EYE34)


def test_runs_round_trip_and_change_encoding():
    rng = np.random.default_rng(0)
    for _ in range(20):
        flat = np.unique(rng.integers(0, 500, size=rng.integers(0, 80)))
        runs = state.runs_of(flat)
        np.testing.assert_array_equal(state.cells_of(runs), flat)
        assert (runs[:, 1] > 0).all()
    new = np.zeros(64, bool)
    assert state.encode_change(np.array([3]), new)[0] == "flip"
    assert state.encode_change(np.arange(0, 64, 2), new)[0] == "replace"


# ---------------------------------------------------------------------- layer binding


def test_edits_reach_the_layer_and_the_train_step_does_not_retrace(data342):
    x, y = data342
    model = make_342()
    layer = model.get_layer("hidden")
    op = TrainOp(model, optimizer="sgd", name="step")
    ed = MaskEditor(layer)
    assert ed.bound and ed.title == "hidden" and ed.input_label == "x"
    op(x, y)
    assert op.trace_count == 1
    ed.toggle(0, 0)  # cut input 0 -> unit 0
    ed._on_front_message(ed, *edit_message(value=0, runs=[(4, 4)], shape=(3, 4)))  # input 1
    assert not layer.get_mask()[0, 0] and not layer.get_mask()[1].any()
    before = layer.kernel.numpy().copy()
    op(x, y)
    after = layer.kernel.numpy()
    assert op.trace_count == 1
    assert after[0, 0] == before[0, 0] and (after[1] == before[1]).all()  # masked: not trained
    assert (after[2] != before[2]).all()
    assert (layer.effective_kernel()[1] == 0).all()
    ed.undo()
    assert layer.get_mask()[1].all()
    op(x, y)
    after_undo = layer.kernel.numpy()
    assert (after_undo[1] != after[1]).all() and op.trace_count == 1


def test_a_mask_set_elsewhere_is_taken_over_before_the_next_edit():
    layer = make_342().get_layer("hidden")
    ed = MaskEditor(layer)
    ed.toggle(0, 0)
    layer.set_mask(EYE34)
    ed.toggle(2, 3)
    expected = EYE34.copy()
    expected[2, 3] = True
    np.testing.assert_array_equal(ed.mask, expected)
    np.testing.assert_array_equal(layer.get_mask(), expected)
    assert ed.undo_depth == 1  # the history before the outside change is gone
    layer.set_mask(np.ones((3, 4)))
    ed.refresh()
    assert ed.count == 12 and ed.undo_depth == 0


def test_sparse_layers_get_sparse_masks_back():
    class SparseLayer:
        name, input_names, unit_names, mask_version = "s", ("a", "b"), None, 0

        def __init__(self):
            self.mask = sp.csr_array(np.eye(2, 3, dtype=bool))

        def get_mask(self):
            return self.mask

        def set_mask(self, mask):
            assert sp.issparse(mask)
            self.mask = sp.csr_array(mask)
            self.mask_version += 1

    layer = SparseLayer()
    ed = MaskEditor(layer)
    assert ed.input_names == ["a", "b"]
    ed.toggle(1, 2)
    np.testing.assert_array_equal(layer.mask.toarray(), [[1, 0, 0], [0, 1, 1]])


def test_weight_readout_from_the_layer():
    layer = make_342().get_layer("hidden")
    ed = MaskEditor(layer)
    spy = Spy(ed)
    ed._on_front_message(ed, {"type": "weight", "i": 2, "j": 1}, [])
    content, _ = spy.last
    expected = float(layer.kernel.numpy()[2, 1])
    assert content == {"type": "weight", "i": 2, "j": 1, "value": pytest.approx(expected)}
    plain = MaskEditor(EYE34)
    spy = Spy(plain)
    plain._on_front_message(plain, {"type": "weight", "i": 0, "j": 0}, [])
    assert spy.last[0]["value"] is None


# ---------------------------------------------------------------------- %mask_editor


def test_from_magic_finds_layers_and_lists_what_exists():
    net = make_342()
    ns = {"net": net, "A": EYE34, "n": 3}
    ed = line_magic("mask_editor", " net.hidden ", ns)
    assert ed.layer is net.get_layer("hidden")
    assert line_magic("mask_editor", "A", ns).count == 3
    with pytest.raises(SelectorError, match=r"no masked layer 'hiden'.*hidden, out"):
        line_magic("mask_editor", "net.hiden", ns)
    with pytest.raises(SelectorError, match=r"2 masked layers; name one: net.hidden, net.out"):
        line_magic("mask_editor", "net", ns)
    with pytest.raises(MaskMagicError, match=r"no variable 'nett'.*nets defined: net"):
        line_magic("mask_editor", "nett.hidden", ns)
    with pytest.raises(MaskMagicError, match=r"'A' is a ndarray, not a Keras model"):
        line_magic("mask_editor", "A.hidden", ns)
    with pytest.raises(MaskMagicError, match=r"required: TARGET"):
        line_magic("mask_editor", "", ns)
    with pytest.raises(MaskMagicError, match=r"unrecognized arguments: hidden"):
        line_magic("mask_editor", "net hidden", ns)
    with pytest.raises(MaskMagicError, match=r"no nets are defined"):
        line_magic("mask_editor", "x", {})


def test_line_magic_in_ipython():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "maskmagic")
        shell.user_ns["net"] = make_342()
        ed = shell.run_line_magic("mask_editor", "net.out")
        assert isinstance(ed, MaskEditor) and ed.shape == (4, 2)
        result = shell.run_cell("%mask_editor net.nope", store_history=False)
        assert isinstance(result.error_in_exec, SelectorError)
    finally:
        InteractiveShell.clear_instance()


# ---------------------------------------------------------------------- static fallback


def test_mimebundle_has_a_png_of_the_mask():
    ed = MaskEditor(EYE34)
    data, _ = ed._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    png = base64.b64decode(data["image/png"])
    assert png == ed.to_png() and png.startswith(b"\x89PNG")
    width, height = np.frombuffer(png[16:24], ">u4")
    assert (width, height) == (4 * 24, 3 * 24)  # small masks: 24 px a cell


def test_mask_image_of_large_masks_is_at_most_1024_px():
    png = mask_image(np.ones((3000, 10), bool))
    width, height = np.frombuffer(png[16:24], ">u4")
    assert height <= 1024 and width >= 1


@pytest.mark.slow
def test_exported_html_without_widget_state_shows_the_image(tmp_path):
    import nbclient
    import nbconvert
    import nbformat

    source = (
        "import numpy as np\nfrom maskmagic.widgets.editor import MaskEditor\n"
        "MaskEditor(np.eye(5, 7))"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nbclient.NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            store_widget_state=False,
            resources={"metadata": {"path": root}},
        ).execute()
    output = nb.cells[0].outputs[0]
    assert "application/vnd.jupyter.widget-view+json" in output["data"]
    assert "widgets" not in nb.metadata  # no saved widget state
    expected = base64.b64encode(mask_image(np.eye(5, 7, dtype=bool))).decode()
    assert output["data"]["image/png"].replace("\n", "") == expected
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert f'src="data:image/png;base64,{expected}"' in html.replace("\n", "")


def test_an_edit_reaches_the_next_compiled_step_loss(data342):
    """Bug caught: a step that keeps the mask it was traced with. The weights the write-back
    protects would not show it; the loss the step computes does."""
    import keras

    x, y = data342
    model = make_342()
    layer = model.get_layer("hidden")
    op = TrainOp(model, optimizer="sgd")
    ed = MaskEditor(layer)
    op(x, y)
    for j in range(4):
        ed.toggle(0, j)  # cut input 0 from every hidden unit
    eager = float(keras.losses.MeanSquaredError()(y, model(x)))
    # Compiled and eager are two computations of one value: a few float32 ulps apart.
    assert op(x, y) == pytest.approx(eager, rel=1e-6) and op.trace_count == 1
    ed.undo()
    ed.undo()
    eager_undone = float(keras.losses.MeanSquaredError()(y, model(x)))
    assert abs(eager_undone - eager) > 1e-6
    assert op(x, y) == pytest.approx(eager_undone, rel=1e-6)
