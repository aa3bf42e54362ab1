"""Deployment: plain-Keras copies of masked models, SavedModel export, safe loading.

* :func:`strip` turns a model of :class:`~maskmagic.layers.MaskedDense` layers into the same
  model made of ``keras.layers.Dense`` layers (and :class:`~maskmagic.layers.MaskedConv2D` /
  ``MaskedConv1D`` into ``keras.layers.Conv2D`` / ``Conv1D``) that hold the effective weights
  (``kernel * mask``, ``bias * bias_mask``). Its ``.keras`` file loads where maskmagic is not
  installed, and its outputs equal the masked model's (bit-identical for dense layers).
* :func:`masked` is its inverse, for models people already have: the same model with its
  ``keras.layers.Dense`` layers replaced by MaskedDense layers that hold the trained weights
  (full masks unless given), so train ops, ``freeze``, the editor and the inspector work on it.
  ``strip(masked(m))`` computes exactly what ``m`` does.
* :func:`export` writes a TensorFlow SavedModel (``model.export``), stripped or not;
  :func:`serve` loads one and returns its serving signature as a numpy function.
* :func:`load_model` loads a masked model's ``.keras`` file with Keras' safe mode on (it
  registers :class:`~maskmagic.layers.MaskedDense` first; a plain ``import maskmagic`` is lazy
  and does not).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from maskmagic import _compat
from maskmagic.errors import MaskMagicError, first_line
from maskmagic.lang.specs import KERAS_OPTIONS
from maskmagic.training.selectors import all_layers

__all__ = [
    "DENSE_LIMIT_BYTES",
    "export",
    "load_dense_weights",
    "load_model",
    "masked",
    "serve",
    "strip",
]

# A sparse layer is stripped to a dense kernel of at most this many bytes (and at most half of
# the memory available now).
DENSE_LIMIT_BYTES = 1 << 30


def _is_masked(layer: Any) -> bool:
    return hasattr(layer, "effective_kernel") and hasattr(layer, "get_mask")


def _available_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _dense_limit(max_dense_bytes: int | None) -> int:
    limit = DENSE_LIMIT_BYTES if max_dense_bytes is None else int(max_dense_bytes)
    available = _available_bytes()
    return limit if available is None else min(limit, available // 2)


def _dense_config(layer: Any) -> dict:
    config = layer.get_config()
    base = keras.layers.Layer.get_config(layer)  # name, trainable, dtype
    return {**base, **{k: config[k] for k in ("units", *KERAS_OPTIONS) if k in config}}


def _plain_layer(layer: Any) -> Any:
    """The plain Keras layer a masked layer becomes (Dense, or Conv1D/Conv2D for convolutions)."""
    if hasattr(layer, "plain_config"):  # MaskedConv1D / MaskedConv2D
        plain = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}[layer.rank]
        return plain.from_config(layer.plain_config())
    return keras.layers.Dense.from_config(_dense_config(layer))


def _effective_kernel(layer: Any, limit: int) -> np.ndarray:
    kernel = layer.effective_kernel()
    if not hasattr(kernel, "toarray"):
        return kernel
    shape = tuple(int(s) for s in kernel.shape)
    itemsize = np.dtype(layer.variable_dtype).itemsize
    needed = shape[0] * shape[1] * itemsize
    if needed > limit:
        raise MaskMagicError(
            f"layer {layer.name!r} is sparse with a kernel of shape {shape}: as a dense "
            f"keras.layers.Dense kernel it needs {needed:,} bytes, expected at most {limit:,} "
            "(max_dense_bytes, or half the free memory); keep this layer as MaskedDense "
            "(save the model with maskmagic installed) or raise max_dense_bytes"
        )
    return kernel.toarray().astype(layer.variable_dtype)


def strip(model: keras.Model, *, max_dense_bytes: int | None = None) -> keras.Model:
    """A plain-Keras copy of ``model``: every MaskedDense becomes a Dense with its effective weights.

    Likewise every MaskedConv2D (MaskedConv1D) becomes a ``keras.layers.Conv2D`` (``Conv1D``)
    holding ``kernel * mask`` and ``bias * bias_mask``: bit-identical outputs on the dense
    implementation, equal to float rounding on the grouped one (other convolution shapes).

    Layer names, the graph (several inputs and outputs, concatenations, nested models) and every
    other layer (copied through its config, with its weights) are kept; masks are gone, as masked
    connections are plain zeros in the kernel. Outputs are bit-identical to the masked model's
    for dense layers; a sparse layer (``impl="sparse"``) becomes a dense matmul, whose sums run
    in another order, so its outputs agree to float rounding (``np.allclose``). The copy is not
    compiled and has no train ops; it needs neither maskmagic to load nor to run.

    Args:
        model: a built functional or Sequential Keras model.
        max_dense_bytes: the largest dense kernel a sparse layer may become (default
            :data:`DENSE_LIMIT_BYTES`, 1 GiB, and never more than half of the free memory).

    Raises:
        MaskMagicError: not a built functional/Sequential model, or a sparse layer too large to
            hold as a dense kernel.
    """
    _check_model(model, "strip")
    limit = _dense_limit(max_dense_bytes)
    kernels = {
        id(layer): (_effective_kernel(layer, limit), layer.effective_bias())
        for layer in all_layers(model)
        if _is_masked(layer)
    }
    stripped, pairs = _clone(
        model, lambda layer: _plain_layer(layer) if _is_masked(layer) else None, "strip"
    )
    for old, new in pairs:
        if id(old) in kernels:
            kernel, bias = kernels[id(old)]
            new.kernel.assign(kernel)
            if bias is not None:
                new.bias.assign(bias)
        elif old.weights:
            new.set_weights(old.get_weights())
    return stripped


def _check_model(model: Any, what: str) -> None:
    if not isinstance(model, keras.Model):
        raise MaskMagicError(f"{what} expects a keras.Model; received {type(model).__name__}")
    if not model.built:
        raise MaskMagicError(
            f"{what} expects a built model; model {model.name!r} is not built yet (call it once)"
        )
    if not isinstance(model, keras.Sequential) and _compat.functional_graph(model) is None:
        raise MaskMagicError(
            f"{what} expects a functional or Sequential model; received a subclassed model of "
            f"type {type(model).__name__}, whose graph cannot be copied from its config"
        )


def masked(
    model: keras.Model,
    masks: dict[str, Any] | None = None,
    bias_masks: dict[str, Any] | None = None,
) -> keras.Model:
    """The same model with every ``keras.layers.Dense`` replaced by a MaskedDense.

    The graph, the layer names and every other layer (with its weights) are kept; each Dense
    layer (exactly that class: subclasses of Dense are copied unchanged) becomes a
    :class:`~maskmagic.layers.MaskedDense` (dense implementation) with the same config and
    weights, and a full mask unless ``masks`` names it. Layers that already are MaskedDense keep
    their masks unless named. With full masks the outputs are bit-identical to ``model``'s.
    The copy is compiled like ``model`` (same loss and metrics, a fresh optimizer) when
    ``model`` was compiled.

    Args:
        model: a built functional or Sequential Keras model (nested models are walked).
        masks: ``{layer name: mask}``; a mask is anything ``MaskedDense(mask=...)`` accepts
            (a 0/1 array of shape (inputs, units), a ``scipy.sparse`` matrix, a constructor
            such as ``maskmagic.masks.random(0.5, seed=0)``).
        bias_masks: ``{layer name: (units,) 0/1 vector}``.

    Returns:
        A new ``keras.Model``; ``model`` itself is left unchanged.

    Raises:
        MaskMagicError: not a built functional/Sequential model, a name that is not a Dense or
            MaskedDense layer of the model, or a bad mask (naming its layer).
    """
    from maskmagic.layers import MaskedDense

    _check_model(model, "masked")
    masks, bias_masks = dict(masks or {}), dict(bias_masks or {})
    layers = list(all_layers(model))
    convertible = {
        layer.name for layer in layers if type(layer) is keras.layers.Dense or _is_masked(layer)
    }
    for what, given in (("masks", masks), ("bias_masks", bias_masks)):
        for name in given:
            if name not in convertible:
                raise MaskMagicError(
                    f"masked: {what} names {name!r}, expected one of the model's Dense layers: "
                    f"{', '.join(sorted(convertible)) or 'none'}"
                )

    def replace(layer: Any) -> Any:
        if type(layer) is keras.layers.Dense:
            return MaskedDense.from_config({**layer.get_config(), "impl": "dense"})
        return None

    copy, pairs = _clone(model, replace, "masked")
    for old, new in pairs:
        if old.weights:
            new.set_weights(old.get_weights())
        if _is_masked(old) and old.built and not old.is_sparse:
            new.set_mask(old.get_mask())
            if old.use_bias:
                new.set_bias_mask(old.get_bias_mask())
        if new.name in masks:
            try:
                new.set_mask(masks[new.name])  # constructors are called with the shape
            except MaskMagicError as exc:
                raise MaskMagicError(f"masked: mask of layer {new.name!r}: {exc}") from None
        if new.name in bias_masks:
            try:
                new.set_bias_mask(bias_masks[new.name])
            except MaskMagicError as exc:
                raise MaskMagicError(f"masked: bias mask of layer {new.name!r}: {exc}") from None
    if model.compiled:
        copy.compile_from_config(model.get_compile_config())
    return copy


def load_dense_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Loads a ``.weights.h5`` file written by the same model made of ``keras.layers.Dense``.

    Keras keys weight files by layer class (``dense``, ``dense_1``, ...), so such a file does not
    load into MaskedDense layers directly. This loads it into ``strip(model)`` (the same graph
    with Dense layers) and copies every layer's weights back; masks are kept.

    Raises:
        MaskMagicError: what :func:`strip` refuses.
    """
    plain = strip(model)
    plain.load_weights(path)
    for layer, twin in zip(all_layers(model), all_layers(plain), strict=True):
        if layer.weights:
            layer.set_weights(twin.get_weights())


def export(model: keras.Model, path: str | os.PathLike, *, stripped: bool = False) -> str:
    """Writes ``model`` as a TensorFlow SavedModel with a ``serving_default`` signature.

    Args:
        model: a built Keras model (masked layers included: their masks are variables of the
            SavedModel, and the serving graph multiplies by them).
        path: the SavedModel directory.
        stripped: export :func:`strip` of the model instead (plain Dense ops in the graph).

    Returns:
        ``path`` as a string.
    """
    from maskmagic.layers import native

    path = os.fspath(path)
    with native.stock_only():  # TensorFlow's own ops only: any TensorFlow can serve the file
        (strip(model) if stripped else model).export(path, format="tf_saved_model", verbose=False)
    return path


def serve(path: str | os.PathLike) -> Callable[..., Any]:
    """Loads a SavedModel and returns its ``serving_default`` signature as a numpy function.

    The function takes the inputs by input-layer name (``f(x=..., z=...)``), or one array
    positionally for a model with one input; it returns a numpy array (one output) or a list of
    them in the model's output order.

    Raises:
        MaskMagicError: inputs that do not match the signature's names (or that mix positional
            and named inputs), or values that are not arrays of the signature's dtype and shape.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(path))
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    outputs = sorted(signature.structured_outputs, key=_output_index)

    def expected() -> str:
        return ", ".join(
            f"{name}: {specs[name].dtype.name} {_shape_text(specs[name].shape)}"
            for name in sorted(specs)
        )

    def call(*inputs: Any, **named: Any) -> Any:
        if inputs and named:
            raise MaskMagicError(
                f"the serving signature takes its inputs either by name or (one input only) as "
                f"one positional array, not both; received {len(inputs)} positional and "
                f"{sorted(named)} named; expected inputs named {sorted(specs)}"
            )
        if inputs:
            if len(specs) != 1 or len(inputs) != 1:
                raise MaskMagicError(
                    f"the serving signature takes inputs named {sorted(specs)}; received "
                    f"{len(inputs)} positional (one positional array is accepted only for a "
                    "model with one input; pass the inputs by name)"
                )
            named = {next(iter(specs)): inputs[0]}
        if set(named) != set(specs):
            raise MaskMagicError(
                f"the serving signature takes inputs named {sorted(specs)}; received "
                f"{sorted(named)}"
            )
        tensors = {}
        for name, value in named.items():
            spec = specs[name]
            try:
                tensor = tf.constant(value, dtype=spec.dtype)
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as exc:
                first = first_line(exc, 200)
                raise MaskMagicError(
                    f"input {name!r} cannot be converted to a {spec.dtype.name} tensor ({first}); "
                    f"received a {type(value).__name__}; expected {expected()}"
                ) from None
            if not spec.shape.is_compatible_with(tensor.shape):
                raise MaskMagicError(
                    f"input {name!r} has shape {tuple(tensor.shape)}; expected "
                    f"{_shape_text(spec.shape)} (inputs: {expected()})"
                )
            tensors[name] = tensor
        result = signature(**tensors)
        arrays = [result[k].numpy() for k in outputs]
        return arrays[0] if len(arrays) == 1 else arrays

    call.loaded = loaded  # type: ignore[attr-defined]  # keeps the variables alive
    return call


def _shape_text(shape: Any) -> str:
    """``(batch, 3)``-style text of a signature's shape (unknown sizes shown as ``?``)."""
    dims = ["?" if d is None else str(d) for d in shape.as_list()]
    if dims and dims[0] == "?":
        dims[0] = "batch"
    return f"({', '.join(dims)})"


def _output_index(name: str) -> tuple[int, str]:
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (0, name)


def load_model(path: str | os.PathLike, *, compile: bool = True) -> keras.Model:
    """``keras.models.load_model(path)`` with Keras' safe mode on, MaskedDense registered.

    Safe mode refuses files that would run code when loaded (``Lambda`` layers holding
    bytecode); maskmagic's layers carry only data in their configs, so they need no exception.

    Raises:
        MaskMagicError: no file at ``path``, or a SavedModel directory (load those with
            :func:`serve`).
    """
    import maskmagic.layers  # noqa: F401 - registers "maskmagic>MaskedDense"

    path = os.fspath(path)
    if "://" not in path:  # local paths only; Keras resolves remote ones itself
        if os.path.isdir(path):
            raise MaskMagicError(
                f"{path!r} is a directory (a SavedModel?); load_model expects a .keras (or .h5) "
                "file written by model.save(...); serve a SavedModel with maskmagic.deploy.serve"
            )
        if not os.path.exists(path):
            raise MaskMagicError(
                f"no model file at {path!r}; expected a .keras (or .h5) file written by "
                "model.save(...)"
            )
    return keras.models.load_model(path, compile=compile, safe_mode=True)


def _clone(
    model: keras.Model, replace: Callable[[Any], Any], what: str
) -> tuple[keras.Model, list[tuple[Any, Any]]]:
    """``model`` copied through its config, each layer by ``replace(layer)`` or, where that
    gives None, a copy of itself; returns the copy and its (old layer, new layer) pairs."""
    pairs: list[tuple[Any, Any]] = []

    def clone(layer: Any) -> Any:
        new = replace(layer)
        if new is None:
            new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new))
        return new

    try:
        copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except MaskMagicError:
        raise
    except Exception as exc:  # a layer of the user's model whose config does not rebuild it
        raise MaskMagicError(
            f"{what} could not copy model {model.name!r} through its config: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return copy, pairs
