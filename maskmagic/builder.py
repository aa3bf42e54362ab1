"""The only place where a parsed cell (a NetSpec) becomes Keras objects.

``build(text, namespace)`` parses the cell, evaluates every mask expression in the namespace
(with the mask constructors of :mod:`maskmagic.masks` in scope), builds a functional Keras model
of :class:`~maskmagic.layers.MaskedDense` layers and the TrainOps. It never writes to the
namespace: the magic binds the names only after everything here succeeded. What the cell
caused comes out as a :class:`~maskmagic.errors.CellError` with a line and column: parse
errors, maskmagic's validation, the user's own ``mask=`` expression raising, and the
``ValueError``/``TypeError`` that Keras raises for an option value or shape it rejects, in the
blocks that hand the cell's values to Keras. Any other exception is a bug in maskmagic and
propagates unchanged (the magic shows it as one, with its traceback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from maskmagic import lang, masks
from maskmagic.errors import CellError, MaskMagicError, first_line
from maskmagic.expressions import evaluate
from maskmagic.layers import MaskedConv1D, MaskedConv2D, MaskedDense
from maskmagic.layers.conv import validate_conv_mask
from maskmagic.training import TrainOp, make_loss, make_optimizer
from maskmagic.training.hold import check_reference

__all__ = ["Built", "build", "build_spec", "mask_scope"]

DEFAULT_LOSS = "mse"
DEFAULT_OPTIMIZER = "sgd"


def mask_scope() -> dict[str, Any]:
    """The names a ``mask=`` expression sees on top of the notebook namespace."""
    return {
        "ones": masks.ones,
        "zeros": masks.zeros,
        "eye": masks.eye,
        "random": masks.random,
        "banded": masks.banded,
        "blocks": masks.blocks,
        "from_csv": masks.from_csv,
        "from_edges": masks.from_edges,
        "load": masks.load,
        "np": np,
    }


@dataclass(frozen=True)
class Built:
    """What a cell built: the spec, the model and the ops (by name)."""

    spec: lang.NetSpec
    model: keras.Model
    ops: dict[str, TrainOp]


# Foreign exceptions that Keras raises for values it rejects (unknown names, bad option
# values or types, shapes that do not fit). Only blocks that pass the cell's values to Keras
# list them; a block of maskmagic's own code converts MaskMagicError alone.
KERAS_REJECTS: tuple[type[Exception], ...] = (ValueError, TypeError)


@contextlib.contextmanager
def _at(
    loc: lang.Location,
    what: str,
    expected: str = "",
    foreign: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Turns the cell-caused errors raised while building ``what`` into a CellError at ``loc``.

    MaskMagicError is always the cell's. ``foreign`` lists the other exception types that, in
    this block, can only come from the cell's values (``(Exception,)`` for the user's own
    expression); ``expected`` (what the statement needs there) ends their message. Anything
    else is a maskmagic bug and propagates unchanged.
    """
    try:
        yield
    except CellError:
        raise
    except MaskMagicError as exc:
        message = str(exc) if str(exc).startswith(what) else f"{what}: {exc}"
        raise CellError(message, loc.line, loc.column, loc.source) from None
    except foreign as exc:
        message = f"{what} failed: {type(exc).__name__}: {first_line(exc)}"
        if expected:
            message += f"; expected {expected}"
        raise CellError(message, loc.line, loc.column, loc.source) from None


def _checked_mask(spec: Any, key: str, namespace: Mapping[str, Any], check: Callable) -> Any:
    """The ``mask=`` or ``bias_mask=`` of a layer spec: the user's expression evaluated with the
    mask constructors in scope, then ``check``-ed; errors point at the option."""
    expression, loc, scope = getattr(spec, key), spec.loc_of(key), mask_scope()
    note = _shadowed(expression, namespace, scope)
    expected = f"a Python expression giving a 0/1 {key}{note}"
    with _at(loc, f"{key}={expression}", expected, foreign=(Exception,)):  # the user's code
        value = evaluate(expression, namespace, scope)
    with _at(loc, f"{key} of layer '{spec.name}'{note}"):
        return check(value)


def _shadowed(expression: str, namespace: Mapping[str, Any], scope: Mapping[str, Any]) -> str:
    """A note for an error message when ``expression`` uses a name that is both a mask
    constructor (in ``scope``) and one of the user's variables (the constructor wins)."""
    names = sorted(
        name
        for name in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression))
        if name in scope and name in namespace and namespace[name] is not scope[name]
    )
    if not names:
        return ""
    listed = ", ".join(f"'{name}'" for name in names)
    return (
        f" (inside mask=, {listed} {'are' if len(names) > 1 else 'is'} maskmagic's "
        "mask constructor, not your variable; bind your array to another name)"
    )


def _initializer(name: str | None, seed: int | None, default: str) -> Any:
    name = name or default
    if seed is None:
        return name
    try:
        return keras.initializers.get({"class_name": name, "config": {"seed": seed}})
    except (ValueError, TypeError):
        return name  # initializers without a seed (zeros, ones, constant)


def _width(tensor: Any) -> int:
    return int(np.prod(tensor.shape[1:]))


def _flat(tensor: Any, name: str) -> Any:
    if len(tensor.shape) > 2:
        return keras.layers.Flatten(name=name)(tensor)
    return tensor


def _source(spec: Any, tensors: dict[str, Any], dense: bool, helpers: dict) -> Any:
    """A layer's input: its sources (flattened for a dense layer), concatenated; ``helpers``:
    the names of those added layers (:meth:`lang.NetSpec.helper_names`)."""
    parts = [tensors[s] for s in spec.sources]
    if dense:
        parts = [_flat(t, helpers[spec.name, s]) for t, s in zip(parts, spec.sources)]
    if len(parts) == 1:
        return parts[0]
    return keras.layers.Concatenate(name=helpers[spec.name, ""])(parts)


def _named_mask(value: Any, shape: tuple[int, int]) -> Any:
    """A dense mask, validated; a NamedMask when ``value`` names its inputs and units."""
    names = masks.names_of(value)
    mask = masks.validate(value, shape)
    return masks.NamedMask(mask, names[0], names[1]) if names else mask


def _layer_options(
    spec: lang.DenseSpec | lang.ConvSpec,
    namespace: Mapping,
    seed: int | None,
    units: int,
    check_mask: Callable[[Any], Any],
) -> dict[str, Any]:
    """The keyword arguments a dense and a conv spec both give their masked layer: the masks
    (evaluated, then ``check_mask`` / checked for ``units`` entries), the checked names and the
    pass-through options."""
    mask = bias_mask = None
    if spec.mask is not None:
        mask = _checked_mask(spec, "mask", namespace, check_mask)
    if spec.bias_mask is not None:
        bias_mask = _checked_mask(
            spec, "bias_mask", namespace, lambda v: masks.validate(v, (units,), name="bias_mask")
        )
    _check_names(spec)
    options = dict[str, Any](spec.options)
    if seed is not None and isinstance(options.get("bias_initializer"), str):
        # a seed of its own: the kernel's would draw the same numbers for a same-size bias
        options["bias_initializer"] = _initializer(options["bias_initializer"], seed + 2**32, "")
    return dict(
        mask=mask,
        bias_mask=bias_mask,
        activation=spec.activation,
        use_bias=spec.use_bias,
        impl=spec.impl,
        kernel_initializer=_initializer(spec.kernel_initializer, seed, "glorot_uniform"),
        name=spec.name,
        **options,
    )


def _dense_layer(spec: lang.DenseSpec, x: Any, namespace: Mapping, seed: int | None) -> Any:
    shape = (_width(x), spec.units)
    options = _layer_options(
        spec, namespace, seed, spec.units, lambda value: _named_mask(value, shape)
    )
    with _at(spec.loc, f"dense layer '{spec.name}'", foreign=KERAS_REJECTS):  # Keras options
        return MaskedDense(spec.units, **options)(x)


def _spatial(spec: Any, x: Any, rank: int | None, what: str) -> int:
    """Checks that ``x`` has spatial axes and channels; returns its number of spatial axes."""
    dims = len(x.shape) - 2
    if dims < 1 or (rank is not None and dims != rank):
        need = {1: "(length, channels)", 2: "(height, width, channels)"}
        expected = need[rank] if rank else "(length, channels) or (height, width, channels)"
        source = ", ".join(spec.sources)
        raise CellError(
            f"{what} '{spec.name}' needs an input of shape {expected} per sample; "
            f"'{source}' gives {tuple(x.shape[1:])}",
            spec.loc.line,
            spec.loc.column,
            spec.loc.source,
        )
    return dims


def _conv_layer(spec: lang.ConvSpec, x: Any, namespace: Mapping, seed: int | None) -> Any:
    _spatial(spec, x, spec.rank, f"conv{spec.rank}d layer")
    kernel_shape = (*spec.kernel, int(x.shape[-1]), spec.filters)
    options = _layer_options(
        spec, namespace, seed, spec.filters, lambda value: validate_conv_mask(value, kernel_shape)
    )
    layer_class = MaskedConv2D if spec.rank == 2 else MaskedConv1D
    with _at(spec.loc, f"conv{spec.rank}d layer '{spec.name}'", foreign=KERAS_REJECTS):
        layer = layer_class(
            spec.filters, spec.kernel, strides=spec.strides, padding=spec.padding, **options
        )
        out = layer.compute_output_shape(tuple(x.shape))
        if any(d is not None and d < 1 for d in out[1:-1]):
            raise MaskMagicError(
                f"kernel {spec.kernel} does not fit the input of spatial shape "
                f"{tuple(x.shape[1:-1])} with padding={spec.padding}; expected a kernel no "
                "larger than the input, or padding=same"
            )
        return layer(x)


_NAMES = (  # option of a layer spec, its Keras lookup, what it expects
    ("activation", keras.activations.get, "a Keras activation name such as relu, sigmoid, tanh, softmax, linear"),
    ("kernel_initializer", keras.initializers.get, "a Keras initializer name such as glorot_uniform, he_normal, orthogonal, zeros"),
)  # fmt: skip


def _check_names(spec: lang.DenseSpec | lang.ConvSpec) -> None:
    """Checks the activation and kernel_initializer names of a layer spec.

    Keras' lookup sees nothing but the user's name, so whatever it raises (a KeyError for an
    initializer that needs arguments, such as ``constant``) is the cell's.
    """
    for key, lookup, expected in _NAMES:
        value = getattr(spec, key)
        if value is not None:
            with _at(spec.loc_of(key), f"{key}={value}", expected, foreign=(Exception,)):
                found = lookup(value)
                if type(found) is keras.initializers.Initializer:  # the abstract base class
                    raise MaskMagicError(f"'{value}' is the abstract base class; {expected}")


_POOLS = {
    ("max", 1): keras.layers.MaxPooling1D,
    ("max", 2): keras.layers.MaxPooling2D,
    ("avg", 1): keras.layers.AveragePooling1D,
    ("avg", 2): keras.layers.AveragePooling2D,
}


def _pool_layer(spec: lang.PoolSpec, x: Any) -> Any:
    what = f"{spec.kind}pool layer"
    dims = _spatial(spec, x, None, what)
    if dims > 2:
        raise CellError(
            f"{what} '{spec.name}' pools 1-D or 2-D maps; its input has {dims} spatial axes",
            spec.loc.line,
            spec.loc.column,
            spec.loc.source,
        )
    size = spec.size * dims if len(spec.size) == 1 else spec.size
    spatial = tuple(x.shape[1:-1])
    if len(size) != dims or any(d is not None and s > d for s, d in zip(size, spatial)):
        raise CellError(
            f"{what} '{spec.name}': pool size {spec.size[0] if len(spec.size) == 1 else spec.size} does not "
            f"fit its input of spatial shape {spatial}; expected {dims} size(s), each at most "
            "the input's",
            spec.loc.line,
            spec.loc.column,
            spec.loc.source,
        )
    with _at(spec.loc, f"{what} '{spec.name}'", foreign=KERAS_REJECTS):
        return _POOLS[spec.kind, dims](size, name=spec.name)(x)


def build_spec(
    spec: lang.NetSpec,
    namespace: Mapping[str, Any] | None = None,
    name: str = "net",
    seed: int | None = None,
) -> Built:
    """Builds the model and TrainOps of a parsed cell (see :func:`build`)."""
    namespace = namespace if namespace is not None else {}
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32
    ):
        raise MaskMagicError(
            f"the seed must be an integer from 0 to {2**32 - 1}; received {seed!r}"
        )
    if spec.base is not None:
        model = _from_model(spec.base, namespace)
        return _with_ops(_described(spec, model), model, namespace)
    if not spec.layers:
        first = spec.inputs[0].loc
        raise CellError(
            "the cell has no layers; expected at least one `dense` statement after the inputs",
            first.line,
            first.column,
            first.source,
        )
    tensors: dict[str, Any] = {}
    helpers = spec.helper_names()
    for given in spec.inputs:
        with _at(given.loc, f"input '{given.name}'", foreign=KERAS_REJECTS):
            tensors[given.name] = keras.Input(given.shape, name=given.name)
    for index, item in enumerate(spec.layers):
        layer_seed = None if seed is None else seed + index
        if isinstance(item, lang.DenseSpec):
            x = _source(item, tensors, True, helpers)
            tensors[item.name] = _dense_layer(item, x, namespace, layer_seed)
        elif isinstance(item, lang.ConvSpec):
            with _at(item.loc, f"conv{item.rank}d layer '{item.name}'", foreign=KERAS_REJECTS):
                x = _source(item, tensors, False, helpers)
            tensors[item.name] = _conv_layer(item, x, namespace, layer_seed)
        elif isinstance(item, lang.PoolSpec):
            with _at(item.loc, f"{item.kind}pool layer '{item.name}'", foreign=KERAS_REJECTS):
                x = _source(item, tensors, False, helpers)
            tensors[item.name] = _pool_layer(item, x)
        elif isinstance(item, lang.FlattenSpec):
            with _at(item.loc, f"flatten layer '{item.name}'", foreign=KERAS_REJECTS):
                x = _source(item, tensors, False, helpers)
                tensors[item.name] = keras.layers.Flatten(name=item.name)(x)
        else:
            with _at(item.loc, f"dropout layer '{item.name}'", foreign=KERAS_REJECTS):
                x = _source(item, tensors, False, helpers)
                tensors[item.name] = keras.layers.Dropout(
                    item.rate, seed=layer_seed, name=item.name
                )(x)
    inputs = [tensors[i.name] for i in spec.inputs]
    outputs = [tensors[o] for o in spec.outputs]
    last = spec.layers[-1].loc
    with _at(last, "building the model", foreign=KERAS_REJECTS):
        model = keras.Model(
            inputs[0] if len(inputs) == 1 else inputs,
            outputs[0] if len(outputs) == 1 else outputs,
            name=name,
        )
    return _with_ops(spec, model, namespace)


def _from_model(base: lang.ModelSpec, namespace: Mapping[str, Any]) -> keras.Model:
    """``from_model EXPR [masks=EXPR]``: the model with its Dense layers made MaskedDense."""
    from maskmagic.deploy import masked

    model = _evaluate_value(base.expression, namespace, base.loc, "from_model", "a Keras model")
    if not isinstance(model, keras.Model):
        raise CellError(
            f"from_model {base.expression}: expected a built functional or Sequential "
            f"keras.Model; received {type(model).__name__}",
            base.loc.line,
            base.loc.column,
            base.loc.source,
        )
    found = {}
    for key in ("masks", "bias_masks"):
        text = getattr(base, key)
        if text is None:
            continue
        value = _evaluate_value(text, namespace, base.loc, f"{key}=", "a dict {layer name: mask}")
        if not isinstance(value, Mapping):
            raise CellError(
                f"{key}={text}: expected a dict {{layer name: mask}}; received "
                f"{type(value).__name__}",
                base.loc.line,
                base.loc.column,
                base.loc.source,
            )
        found[key] = dict(value)
    with _at(base.loc, f"from_model {base.expression}"):
        return masked(model, **found)


def _described(spec: lang.NetSpec, model: keras.Model) -> lang.NetSpec:
    """``spec`` with inputs and layers describing ``model`` (for the summary and drawing).

    MaskedDense layers become DenseSpecs; every other layer (BatchNormalization, a nested
    model, ...) a pass-through DropoutSpec of rate 0, which the summary shows by its class.
    """
    from maskmagic import _compat

    graph = _compat.functional_graph(model)
    base = spec.base
    if base is None:  # called for from_model cells only
        raise AssertionError("a model description without from_model")
    if graph is None:  # mypy found this: a subclassed model would fail here (issue 13 to check)
        raise AssertionError(f"model {model.name!r} has no functional graph to describe")
    inputs: list[lang.InputSpec] = []
    layers: list[lang.DenseSpec | lang.DropoutSpec] = []
    for layer in graph.layers:
        nodes = _compat.inbound_nodes(layer)
        tensors = nodes[0].input_tensors if nodes else []
        # Every tensor of a functional graph has the layer that produced it.
        sources = tuple(_compat.producing_layer(t).name for t in tensors)  # type: ignore[union-attr]
        if isinstance(layer, keras.layers.InputLayer):
            shape = tuple(int(d) for d in layer.output.shape[1:])
            inputs.append(lang.InputSpec(layer.name, shape, base.loc))
        elif isinstance(layer, MaskedDense):
            activation = keras.activations.serialize(layer.activation)
            layers.append(
                lang.DenseSpec(
                    layer.name,
                    layer.units,
                    sources=sources,
                    activation=None if activation == "linear" else activation,
                    use_bias=layer.use_bias,
                    impl=layer.impl,
                    loc=base.loc,
                )
            )
        else:
            layers.append(lang.DropoutSpec(layer.name, 0.0, sources, base.loc))
    return dataclasses.replace(spec, inputs=tuple(inputs), layers=tuple(layers))


def _evaluate_value(
    expression: str, namespace: Mapping[str, Any], loc: lang.Location, key: str, expected: str
) -> Any:
    what = f"a Python expression giving {expected}"
    with _at(loc, f"{key} {expression}", what, foreign=(Exception,)):  # the user's code
        return evaluate(expression, namespace, mask_scope())


def _with_ops(spec: lang.NetSpec, model: keras.Model, namespace: Mapping[str, Any]) -> Built:
    """Adds the loss, optimizer and train ops of ``spec`` to ``model`` and compiles it."""
    last = spec.layers[-1].loc if spec.layers or spec.base is None else spec.base.loc
    loss = _loss(spec.loss)
    optimizer = _optimizer(spec.optimizer)
    ops = {}
    for op in spec.train:
        op_loss: Any = dict(op.options).get("loss")  # a LossSpec, or None
        with _at(op.loc, f"train op '{op.name}'"):
            ops[op.name] = TrainOp(
                model,
                loss=_loss(op_loss) if op_loss is not None else loss,
                optimizer=_optimizer(op.optimizer) if op.optimizer is not None else optimizer,
                select=list(op.select) or None,
                freeze=list(op.freeze) or None,
                name=op.name,
                **_hold_options(op, namespace, model),
            )
    with _at(last, "compiling the model", foreign=KERAS_REJECTS):
        model.compile(optimizer=optimizer, loss=loss)
    return Built(spec, model, ops)


def _hold_options(
    op: lang.TrainSpec, namespace: Mapping[str, Any], model: keras.Model
) -> dict[str, Any]:
    """``hold=``, ``hold_on=`` (evaluated in the namespace) and ``hold_tol=`` of a train op."""
    if not op.hold:
        return {}
    options: dict[str, Any] = {"hold": list(op.hold)}
    if op.hold_on is not None:
        loc, what = op.loc_of("hold_on"), f"hold_on={op.hold_on}"
        with _at(loc, what, "an array of reference inputs", foreign=(Exception,)):  # user's code
            value = evaluate(op.hold_on, namespace, {} if "np" in namespace else {"np": np})
        with _at(loc, what):
            check_reference(model, value)  # a shape error points at hold_on=, not the statement
        options["hold_on"] = value
    if op.hold_tol is not None:
        options["hold_tol"] = op.hold_tol
    return options


def _loss(spec: lang.LossSpec | None) -> keras.losses.Loss:
    if spec is None:
        return make_loss(DEFAULT_LOSS)
    with _at(spec.loc, f"loss '{spec.name}'", foreign=KERAS_REJECTS):
        return make_loss(spec.name, **dict(spec.options))


def _optimizer(spec: lang.OptimizerSpec | None) -> keras.optimizers.Optimizer:
    if spec is None:
        return make_optimizer(DEFAULT_OPTIMIZER)
    with _at(spec.loc, f"optimizer '{spec.name}'", foreign=KERAS_REJECTS):
        return make_optimizer(spec.name, **dict(spec.options))


def build(
    text: str,
    namespace: Mapping[str, Any] | None = None,
    name: str = "net",
    seed: int | None = None,
) -> tuple[keras.Model, dict[str, TrainOp]]:
    """Builds what a ``%%masked_net`` cell describes, without IPython.

    Args:
        text: the cell body in the cell language.
        namespace: where ``mask=`` expressions look up names (read only, never written).
        name: the Keras model's name.
        seed: makes the initial weights (and dropout) reproducible.

    Returns:
        ``(model, ops)``: the Keras model and a dict of op name -> TrainOp.

    Raises:
        CellError: anything wrong with the cell, with its line and column.
    """
    built = build_spec(lang.parse(text), namespace, name=name, seed=seed)
    return built.model, built.ops
