"""Upgrade legacy Caffe nets and solvers the way Caffe does, without losing a comment.

Caffe's ``upgrade_net_proto_text`` parses a file, runs ``UpgradeNetAsNeeded`` on the message and
re-prints the whole thing: every comment, blank line and the author's field order are gone. This
package makes the *same* upgrade as a set of minimal edits on the lossless tree
(:mod:`rewriter.text.cst`), step by step in Caffe's order (``src/caffe/util/upgrade_proto.cpp``),
re-parsing between steps:

1. ``UpgradeV0Net``: V0 ``layers { layer { ... } bottom top }`` -> flat V1 ``layers``; "padding"
   layers are folded into the convolution / pooling layer that reads them; the flat V0 fields
   (``kernelsize``, ``num_output``, ``meanfile``...) move into the typed ``*_param`` messages;
2. ``UpgradeNetDataTransformation``: ``scale``, ``mean_file``, ``crop_size``, ``mirror`` of V1
   DATA / IMAGE_DATA / WINDOW_DATA layers move into ``transform_param``;
3. ``UpgradeV1Net``: ``layers`` -> ``layer``, enum types -> type strings, ``param: "w"``,
   ``blob_share_mode``, ``blobs_lr`` and ``weight_decay`` -> ``param { name share_mode lr_mult
   decay_mult }`` blocks;
4. ``UpgradeNetInput``: legacy ``input`` / ``input_dim`` / ``input_shape`` -> an ``Input`` layer
   named "input" in front of the net;
5. ``UpgradeNetBatchNorm``: BatchNorm layers with exactly three ``param`` blocks get
   ``lr_mult: 0`` and ``decay_mult: 0`` in each (names and other fields kept);
6. solvers, ``UpgradeSolverType``: ``solver_type: NESTEROV`` -> ``type: "Nesterov"``.

The same steps also exist on protobuf messages (:func:`upgrade_net_message_caffe`,
:func:`upgrade_solver_message_caffe`); they are the reference the text edits are checked against
and what the streaming ``.caffemodel`` upgrade (:mod:`rewriter.upgrade.caffemodel`) runs on its
blob-less layer views. Every upgraded document is verified before it is returned: it must bind to
exactly the message Caffe's upgrade produces (deliberate differences aside), and Caffe's
``Net::Init`` graph of the result must equal the original's for TRAIN and TEST.

Deliberate differences from Caffe are documented in ``docs/upgrade.md`` and reported per file in
:attr:`UpgradeResult.deliberate_differences`.

This module is the driver and the names callers import (re-exported from where they live): each
step is a module of its own (:mod:`~rewriter.upgrade.v0`, :mod:`~rewriter.upgrade.data`,
:mod:`~rewriter.upgrade.v1`, :mod:`~rewriter.upgrade.inputs`, :mod:`~rewriter.upgrade.batchnorm`,
:mod:`~rewriter.upgrade.solver`) on the text edits of :mod:`~rewriter.upgrade.splice`;
:mod:`~rewriter.upgrade.net` runs one net through them and :mod:`~rewriter.upgrade.verify`
holds the graph checks. None of them imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rewriter.caffe.upgrade_proto import (
    MessageUpgrade,
    Refusal,
    upgrade_net_message_caffe,
    upgrade_solver_message_caffe,
)
from rewriter.text.cst import Document, parse
from rewriter.upgrade.net import _bind, _Target, _upgrade_net_body
from rewriter.upgrade.result import NET, SOLVER, UpgradeError, UpgradeResult
from rewriter.upgrade.solver import _upgrade_solver
from rewriter.upgrade.splice import _Ctx, _file_unit
from rewriter.upgrade.verify import (
    BuildWarning,
    InputDropped,
    _build_warnings,
    _first_difference,
    check_same_graph,
)

if TYPE_CHECKING:
    from rewriter.schema.runtime import Schema

__all__ = [
    "BuildWarning",
    "InputDropped",
    "MessageUpgrade",
    "Refusal",
    "UpgradeError",
    "UpgradeResult",
    "check_same_graph",
    "needs_upgrade",
    "parse_for_upgrade",
    "upgrade_document",
    "upgrade_net_message_caffe",
    "upgrade_solver_message_caffe",
    "upgrade_text",
]


# ============================================================================ driver


def upgrade_document(
    doc: Document,
    *,
    kind: str | None = None,
    schema: Schema | None = None,
    lenient: bool = False,
    v1_types: Mapping[str, str] | None = None,
) -> UpgradeResult:
    """Upgrade a legacy net or solver with minimal edits (see the module docstring).

    ``kind`` is "net", "solver" or None (detected from the top-level fields). A document that
    needs nothing comes back unchanged (``changed`` False, the very same ``Document``).

    Raises :class:`UpgradeError` (a :class:`~rewriter.errors.RewriterError`) where Caffe refuses
    the upgrade, with ``path:line:col`` and Caffe's own message, and ``SchemaErrors`` when the
    file does not bind to the schema (Caffe fails to parse it too). ``lenient``: a fork's fields
    and enum values unknown to the schema are kept byte for byte, outside what is upgraded;
    ``v1_types`` names the V2 type of a fork's V1 type token (``{"CROP": "Crop"}``).

    Memory: when the caller keeps no reference to ``doc`` (``upgrade_document(parse(...))``, as
    :func:`upgrade_text` does), its tree is freed once the first step has rewritten the text.
    """
    if schema is None:
        from rewriter.schema.runtime import default_schema

        schema = default_schema()
    roots = {"net": NET, "solver": SOLVER}
    if kind is not None and kind not in roots:
        raise UpgradeError(f"kind must be 'net' or 'solver', not {kind!r}")
    from rewriter.schema.bind import detect_kind

    edited: Document | None = None
    if not doc.pristine:  # an Editor result: its nodes point into the text before the edit
        edited = doc
        doc = parse(doc.code, doc.path)
    root = roots[kind] if kind is not None else detect_kind(doc, schema)
    newline = doc.newline
    crlf = newline == "\r\n" and "\n" not in doc.src.replace("\r\n", "")
    ctx = _Ctx(doc.path, _file_unit(doc), crlf, lenient=lenient, v1_types=v1_types or {})
    if root == SOLVER:
        result = _upgrade_solver(ctx, doc, schema)
        if not result.changed:
            result.document = edited if edited is not None else doc
        return result
    old_code, path = doc.code, doc.path
    box = [doc]
    del doc  # from here on ``box`` (then the run) holds the only reference we keep
    run = _upgrade_net_body(ctx, box, schema, NET, _Target(), path)
    new_doc, expected = run.doc, run.expected
    if not expected.changed or new_doc.code == old_code:
        return UpgradeResult(edited if edited is not None else new_doc, False, [], [], "net")
    final = (
        run.bound
        if run.bound is not None
        else _bind(new_doc, schema, NET, internal=True, lenient=lenient)
    )
    run.bound = None
    want = run.message()
    if final != want:
        raise UpgradeError(
            "internal error: the upgraded text differs from Caffe's upgrade: "
            + _first_difference(final, want)
        )
    warnings = _build_warnings([run.graph_error])
    return UpgradeResult(new_doc, True, expected.log, ctx.differences, "net", warnings)


def parse_for_upgrade(
    text: str, path: str = "<string>", *, kind: str | None = None, lenient: bool = False
) -> Document:
    """Parse text for :func:`upgrade_document`. On a syntax error, the schema errors of the part
    before it are reported first, in file order, as protobuf (and so Caffe) would."""
    from rewriter.errors import ParseError, SchemaErrors

    try:
        return parse(text, path)
    except ParseError:
        from rewriter.schema.bind import diagnose

        root = {"net": NET, "solver": SOLVER}.get(kind or "")
        _, diags = diagnose(text, path, None, root, lenient)
        raise SchemaErrors([d for d in diags if d.severity == "error"]) from None


def upgrade_text(
    text: str,
    path: str = "<string>",
    *,
    kind: str | None = None,
    lenient: bool = False,
    v1_types: Mapping[str, str] | None = None,
) -> UpgradeResult:
    """:func:`upgrade_document` on text (``result.document.code`` is the upgraded text)."""
    doc = parse_for_upgrade(text, path, kind=kind, lenient=lenient)
    return upgrade_document(doc, kind=kind, lenient=lenient, v1_types=v1_types)


def needs_upgrade(doc: Document, *, kind: str | None = None) -> bool:
    """True when :func:`upgrade_document` would change the document."""
    return upgrade_document(doc, kind=kind).changed
