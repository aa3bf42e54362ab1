"""Facts with one home: the layer, the cell language and its help read the same definitions."""

from __future__ import annotations

import pytest

from maskmagic import lang
from maskmagic.errors import CellError


def test_layer_and_language_share_the_implementations():
    # Catches a new implementation added to MaskedDense but not accepted by `impl=` (or the
    # reverse): both read lang.specs.IMPLS.
    from maskmagic.layers import IMPLS

    assert IMPLS is lang.IMPLS
    for impl in IMPLS:
        assert lang.parse(f"input x 3\ndense h 2 impl={impl}\n").layers[0].impl == impl
    with pytest.raises(CellError, match="auto, dense or sparse"):
        lang.parse("input x 3\ndense h 2 impl=csr\n")


def test_help_lists_every_option_the_parser_accepts():
    # Catches an option added to the parser and forgotten in `%masked_net?`.
    for key in lang.PASSTHROUGH_OPTIONS:
        assert f"{key}=" in lang.HELP
    assert "impl=" + "|".join(lang.IMPLS) in lang.HELP


def test_widgets_send_their_palettes_and_the_front_ends_define_none():
    # Catches a colour changed in Python (the PNG fallback) but not in the live view, or the
    # reverse: the JavaScript and CSS read the palette the widget sends.
    import re
    from pathlib import Path

    import numpy as np

    from maskmagic.widgets import palette
    from maskmagic.widgets.editor import MaskEditor

    editor = MaskEditor(np.eye(3, 2, dtype=bool))
    assert editor.palette == palette.EDITOR and "palette" in editor.keys
    static = Path(palette.__file__).parent / "static"
    for name in ("editor.js", "inspector.js", "common.css", "editor.css", "inspector.css"):
        text = (static / name).read_text(encoding="utf-8")
        triples = re.findall(r"\[\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\]", text)
        assert not triples, (name, triples)
        assert "--mm-on:" not in text and "ANCHORS" not in text, name


def test_both_widgets_carry_the_shared_stylesheet():
    # Catches a widget that loses its frame and buttons when common.css is split off.
    from maskmagic.widgets import STATIC
    from maskmagic.widgets.editor import MaskEditor
    from maskmagic.widgets.inspector import GradientInspector

    common = (STATIC / "common.css").read_text(encoding="utf-8")
    for widget, own in ((MaskEditor, "editor.css"), (GradientInspector, "inspector.css")):
        assert widget._css.startswith(common)
        assert widget._css.endswith((STATIC / own).read_text(encoding="utf-8"))


def test_layer_option_lists_have_one_home():
    # Catches an option added to the parser's dense list but not to conv (conv takes every dense
    # option), one missing from `%masked_net?`, or a Keras option that strip() would drop
    # because a copied list went stale: parser, help, deploy and MaskedConv read lang.specs.
    import inspect

    import keras

    from maskmagic.lang import specs

    assert set(specs.DENSE_OPTIONS) <= set(specs.CONV_OPTIONS)
    for key in specs.DENSE_OPTIONS + specs.CONV_OPTIONS:
        assert f"{key}=" in lang.HELP, key
    for plain in (keras.layers.Dense, keras.layers.Conv2D):
        accepted = inspect.signature(plain.__init__).parameters
        assert set(specs.KERAS_OPTIONS) <= set(accepted), plain.__name__
    with pytest.raises(CellError, match="unknown option 'kernel_init='.*kernel_initializer"):
        lang.parse("input x 3\ndense h 2 kernel_init=zeros\n")
