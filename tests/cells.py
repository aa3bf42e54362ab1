"""Cells shared by several test modules: the three questions of DESIGN.md."""

QUESTION1 = """\
input x 3
dense hidden 4 activation=sigmoid
dense out 2
loss mse
optimizer sgd learning_rate=0.1
train train_op_all
train train_op12 out
train train_op2 out[1]
train keep_first freeze=out[0]
"""

# The seed question's data: the 8 binary inputs of the 3-4-2 net, output 0 = x0 XOR x1 (to
# keep), output 1 = x1 OR x2 (to improve). Used by the hold= tests and examples/hold_output.
SEED_X = [[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
SEED_Y = [[float(a != b), float(b or c)] for a, b, c in SEED_X]
