"""TrainOp.fit's progress display (Keras' verbose 0/1/2) in a terminal; the notebook side is in
tests/test_notebook_output.py."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maskmagic.errors import MaskMagicError
from maskmagic.training import TrainOp

from .conftest import make_342


@pytest.fixture
def op():
    return TrainOp(make_342(), optimizer=keras.optimizers.Adam(0.05), name="fitter")


def test_verbose_1_is_one_bar_for_the_whole_fit(op, data342, capsys):
    """Catches one bar per epoch (stacked bars): a terminal bar ends its line only when closed."""
    x, y = data342
    history = op.fit(x, y, epochs=5, batch_size=16, verbose=1)
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1 and out.err.endswith("\n"), repr(out.err)
    final = out.err.rstrip("\n").split("\r")[-1]  # what the line shows at the end
    steps = 5 * -(-len(x) // 16)
    assert final.startswith("fitter epoch 5/5"), final
    assert f"{steps}/{steps}" in final and "100%" in final
    assert f"loss={history[-1]:.4g}" in final  # the last epoch's mean loss


def test_verbose_2_prints_one_line_per_epoch(op, data342, capsys):
    x, y = data342
    history = op.fit(x, y, epochs=3, batch_size=16, verbose=2)
    out = capsys.readouterr()
    assert out.err == ""
    lines = out.out.splitlines()
    assert len(lines) == 3
    for epoch, (line, loss) in enumerate(zip(lines, history), start=1):
        assert line.startswith(f"fitter epoch {epoch}/3 - loss: {loss:.4g} - "), line
        assert line.endswith(" s")


@pytest.mark.parametrize("verbose", [0, False])
def test_verbose_0_prints_nothing(op, data342, capsys, verbose):
    x, y = data342
    assert len(op.fit(x, y, epochs=2, batch_size=16, verbose=verbose)) == 2
    assert capsys.readouterr() == ("", "")


def test_verbose_true_is_1_and_np_integers_work(op, data342, capsys):
    x, y = data342
    op.fit(x, y, epochs=2, batch_size=16, verbose=True)
    assert capsys.readouterr().err.count("\n") == 1
    op.fit(x, y, epochs=2, batch_size=16, verbose=np.int64(2))
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize("verbose", [3, -1, "1", 1.0, None])
def test_bad_verbose_is_refused_before_training(op, data342, verbose):
    x, y = data342
    before = [v.numpy().copy() for v in op.model.trainable_variables]
    with pytest.raises(MaskMagicError, match=r"verbose must be 0 .* received"):
        op.fit(x, y, verbose=verbose)
    after = [v.numpy() for v in op.model.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
