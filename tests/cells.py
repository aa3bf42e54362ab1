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
