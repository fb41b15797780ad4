"""pycaffe NetSpec scripts without Caffe: evaluate them, rewrite them, and write them.

* :mod:`rewriter.netspec.evaluator` is a Caffe-free stand-in for ``caffe``, ``caffe.net_spec``
  and ``caffe.proto.caffe_pb2`` (backed by the bundled schema) that reproduces pycaffe's
  ``net_spec.py`` exactly and records where in the script every layer was created;
  :func:`~rewriter.netspec.evaluator.run_script` runs a script with it and collects the nets
  the script wrote.
* :mod:`rewriter.netspec.codemod` applies recipe steps (freeze, set-lr, stop-gradient,
  renames...) to a NetSpec *script* with libcst, editing only the argument lists of the calls
  that create the affected layers, and verifies the result by running both scripts.
* :mod:`rewriter.netspec.export` turns a prototxt net into a readable NetSpec script that
  reproduces it exactly.

Nothing here is imported by ``import rewriter``; every module imports protobuf and libcst
itself.
"""

from __future__ import annotations

__all__: list[str] = []
