"""Blob and parameter shapes, computed the way Caffe's layers compute them in ``Reshape``.

``infer_shapes(net, phase)`` walks Caffe's initialised net
(:func:`rewriter.caffe.graph.build_graph`:
phase filtering, inserted splits) in order and applies, per layer, the arithmetic of the BVLC
layer's ``LayerSetUp``/``Reshape`` (``src/caffe/layers/*.cpp``), including the checks Caffe makes
there. The rules that decide most shapes:

* convolution: ``out = (in + 2*pad - (dilation*(kernel-1)+1)) / stride + 1`` with C++ integer
  division; deconvolution: ``out = stride*(in-1) + dilation*(kernel-1)+1 - 2*pad``;
* pooling: ``out = ceil((in + 2*pad - kernel) / stride) + 1`` (``floor`` with
  ``round_mode: FLOOR``), then, when there is padding and the last window would start in the
  padding (``(out-1)*stride >= in + pad``), one less; global pooling uses the whole plane;
* inner product: ``axis`` splits the bottom into "batch" dims and ``K = count(axis)``.

A check Caffe makes that fails raises :class:`ShapeError` (a
:class:`~rewriter.caffe.graph.CaffeError`)
with Caffe's text. A layer whose arithmetic is not known here (a fork type, a Python layer, an
HDF5 source without a given shape) stops the walk: :attr:`Shapes.stopped` says
``shape unknown after <layer> (type <T>)`` and every blob before it keeps its shape. Nothing is
guessed: where a data layer's size lives in its database (a ``Data`` layer without
``crop_size``), the caller passes ``height``/``width`` (and ``channels``, which defaults to 3 and
is reported as an assumption).

The package: :mod:`.core` (the result, errors and helpers), :mod:`.infer` (the walk),
:mod:`.table` (the rules, from one module per layer family: :mod:`.data`, :mod:`.conv`,
:mod:`.pooling`, :mod:`.blobs`, :mod:`.losses`, :mod:`.neurons`, :mod:`.recurrent`). It re-exports
what the rest of the project imports from ``rewriter.caffe.shapes``.
"""

from .conv import _conv_geometry as _conv_geometry
from .core import DATA_LAYER_TYPES as DATA_LAYER_TYPES
from .core import LayerShapes as LayerShapes
from .core import Shape as Shape
from .core import ShapeError as ShapeError
from .core import Shapes as Shapes
from .core import ShapeUnknown as ShapeUnknown
from .core import _Ctx as _Ctx
from .core import _Options as _Options
from .core import _source_file as _source_file
from .core import render_text as render_text
from .core import shape_string as shape_string
from .infer import _resolve as _resolve
from .infer import data_layer_shapes as data_layer_shapes
from .infer import infer_shapes as infer_shapes
from .pooling import _pool_output as _pool_output
from .table import KNOWN_TYPES as KNOWN_TYPES

__all__ = [
    "DATA_LAYER_TYPES",
    "LayerShapes",
    "Shape",
    "ShapeError",
    "ShapeUnknown",
    "Shapes",
    "data_layer_shapes",
    "infer_shapes",
    "shape_string",
]
