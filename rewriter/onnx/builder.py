"""What a layer converter writes into: the model being built (:class:`Builder`) and one
layer's view of it (:class:`Ctx`), shared by the graph walk (:mod:`rewriter.onnx.export`) and
the converters (:mod:`rewriter.onnx.layers`, :mod:`rewriter.onnx.recurrent`) so neither imports
the other back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rewriter.caffe.graph import Layer

from .errors import ExportError

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "Builder", "Converter", "Ctx"]

#: ONNX opsets this exporter writes (13: Split/ReduceSum/Squeeze take tensors)
MIN_OPSET = 13
DEFAULT_OPSET = 17


def _unique(hint: str, used: set[str]) -> str:
    name = hint
    k = 1
    while name in used:
        k += 1
        name = f"{hint}#{k}"
    used.add(name)
    return name


@dataclass
class Builder:
    """Nodes, initializers and graph inputs of the model being built, with unique names."""

    opset: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    node_names: set[str] = field(default_factory=set)
    consts: dict[tuple[bytes, str, tuple[int, ...]], str] = field(default_factory=dict)

    def fresh(self, hint: str) -> str:
        """A value name not used yet: ``hint``, else ``hint#2``, ``hint#3``..."""
        return _unique(hint, self.used)

    def node(
        self,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | int = 1,
        *,
        name: str,
        **attrs: Any,
    ) -> list[str]:
        """Add a node; ``outputs`` is a list of names or how many fresh ones to make."""
        outs = (
            [self.fresh(f"{name}/{op}") for _ in range(outputs)]
            if isinstance(outputs, int)
            else list(outputs)
        )
        node_name = _unique(name, self.node_names)
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=node_name, **attrs))
        return outs

    def const(self, value: Any, hint: str, dtype: Any = np.float32) -> str:
        """An initializer holding ``value`` (identical small constants are shared)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.tobytes(), arr.dtype.str, arr.shape)
        if arr.size <= 16 and key in self.consts:
            return self.consts[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        if arr.size <= 16:
            self.consts[key] = name
        return name

    def ints(self, values: Sequence[int], hint: str) -> str:
        return self.const(list(values), hint, np.int64)

    def reduce(self, op: str, x: str, axes: Sequence[int], keepdims: bool, *, name: str) -> str:
        """ReduceSum/ReduceMean/... over ``axes`` (axes became an input in opset 13/18)."""
        if op == "ReduceSum" or self.opset >= 18:
            ins = [x, self.ints(axes, "axes")]
            return self.node(op, ins, name=name, keepdims=int(keepdims))[0]
        return self.node(op, [x], name=name, axes=list(axes), keepdims=int(keepdims))[0]


@dataclass
class Ctx:
    """What a layer converter sees: its layer, message, ONNX values and Caffe shapes."""

    b: Builder
    layer: Layer
    msg: Any
    #: ONNX value names of the bottoms, in order
    bottoms: list[str]
    bottom_shapes: list[tuple[int, ...]]
    #: ONNX value names the converter must write, one per top
    tops: list[str]
    top_shapes: list[tuple[int, ...]]
    #: ONNX value names of the parameter blobs (initializers or graph inputs)
    params: list[str]
    param_shapes: list[tuple[int, ...]]
    #: the parameter values when weights were given (None: graph inputs)
    values: list[Any] | None
    phase: str
    fail: Callable[[str, str | None], ExportError]

    @property
    def name(self) -> str:
        return self.layer.name

    def node(self, op: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        """One node with one output: ``out`` (a top's name) or a fresh intermediate."""
        outputs: Sequence[str] | int = [out] if out is not None else 1
        return self.b.node(op, inputs, outputs, name=self.name, **attrs)[0]

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        return self.b.const(value, f"{self.name}/const", dtype)

    def ints(self, values: Sequence[int]) -> str:
        return self.b.ints(values, f"{self.name}/shape")

    def reshape(self, x: str, shape: Sequence[int], out: str | None = None) -> str:
        return self.node("Reshape", [x, self.ints(shape)], out)


Converter = Callable[[Ctx], None]
