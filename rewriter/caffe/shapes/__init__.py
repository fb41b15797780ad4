"""Blob and parameter shapes, computed the way Caffe's layers compute them in ``Reshape``.

The package re-exports what the rest of the project imports from ``rewriter.caffe.shapes``; see
:mod:`rewriter.caffe.shapes.core` for the rules and the walk.
"""

from .core import DATA_LAYER_TYPES as DATA_LAYER_TYPES
from .core import KNOWN_TYPES as KNOWN_TYPES
from .core import LayerShapes as LayerShapes
from .core import Shape as Shape
from .core import ShapeError as ShapeError
from .core import Shapes as Shapes
from .core import ShapeUnknown as ShapeUnknown
from .core import _conv_geometry as _conv_geometry
from .core import _Ctx as _Ctx
from .core import _Options as _Options
from .core import _pool_output as _pool_output
from .core import _resolve as _resolve
from .core import _source_file as _source_file
from .core import data_layer_shapes as data_layer_shapes
from .core import infer_shapes as infer_shapes
from .core import render_text as render_text
from .core import shape_string as shape_string

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
