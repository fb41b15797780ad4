"""Located Caffe errors: where in the file the field that made ``Net::Init`` stop is written.

Contract (for every module that raises :class:`~rewriter.caffe.graph.CaffeError` or a subclass such
as :class:`~rewriter.caffe.shapes.ShapeError`): pass, as keyword arguments, what caused the error::

    CaffeError(message, "net.cpp", layer="conv2", layer_index=5, field="bottom", index=0,
               hint="did you mean 'pool1/norm1'?")

* ``layer``: the layer's name (as written);
* ``layer_index``: its index in the upgraded net's ``layer`` list (``Layer.source_index``;
  ``_LayerDef.source_index`` while building). It is the file's own block order except after
  the in-memory upgrade (an ``Input`` layer made of legacy ``input`` fields comes first, V0
  padding layers are folded away): the name decides, the index breaks ties;
* ``field``: a dotted path inside the layer in current (V2) names: ``bottom``, ``top``,
  ``type``, ``loss_weight``, ``param.name``, ``convolution_param.group``; a segment may carry
  its occurrence explicitly (``param[1].lr_mult``);
* ``index``: which occurrence of the repeated field (applied to the first segment written
  more than once in the file, else to the last one): ``bottom`` 1 is the second bottom;
* ``hint``: what to do next, e.g. :func:`rewriter.errors.did_you_mean`'s text.

An error about the net itself rather than a layer gives ``field`` alone (``input_dim``).

:func:`diagnostic` turns such an error and the file's lossless tree into a
:class:`~rewriter.errors.Diagnostic` with the caret at the offending value; when that field is
not written (a default value, an automatic top), at the layer's ``name:``, then at the layer
block. V1 ``layers {}`` (``blobs_lr``, ``param: "w"``...) and V0 ``layers { layer {} }`` files
are located too, and so are the upgrade's own refusals (:class:`rewriter.upgrade.document.Refusal`).
:func:`located` does it for a CLI command: it re-reads the file only when an error escapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewriter.errors import Diagnostic, Location, RewriterError

if TYPE_CHECKING:
    from rewriter.text.cst import Document, Field, MessageBody

    from .graph import CaffeError

__all__ = ["diagnostic", "locate_error", "located", "net_init_diagnostics"]

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")
# V1 ``layers`` spell a layer's param blocks as parallel repeated fields
_V1_PARAM = {
    "name": "param",
    "lr_mult": "blobs_lr",
    "decay_mult": "weight_decay",
    "share_mode": "blob_share_mode",
}
_V0_PARAM = {"lr_mult": "blobs_lr", "decay_mult": "weight_decay"}
_V0_FIELDS = {"kernel_size": "kernelsize", "bias_term": "biasterm"}


@contextmanager
def located(path: str | Path, phase: str | None = None) -> Iterator[None]:
    """Place a Caffe error escaping the block in ``path`` (re-read only on that path)."""
    from .graph import CaffeError
    from .upgrade_proto import Refusal, from_refusal

    try:
        yield
    except CaffeError as e:
        if e.diagnostic is None:
            e.phase = e.phase or phase
            doc = _read(path)
            if doc is not None:
                e.diagnostic = diagnostic(e, doc, phase)
        raise
    except Refusal as r:
        # the upgrade's refusals name the file's own ``layers`` entry: turn them into Caffe's
        err = from_refusal(r)
        doc = _read(path)
        if doc is not None:
            err.diagnostic = diagnostic(err, doc, phase, exact_index=True)
        err.phase = phase
        raise err from None


def net_init_diagnostics(
    source: Document | str | Path, message: Any, keep: MutableMapping[str, Any] | None = None
) -> list[Diagnostic]:
    """``rewriter check``'s Net::Init findings on a bound net, located in ``source``: its
    document, or its path to re-read only if there is a finding (a caller may free the
    lossless tree of a big file before its graphs are built). ``keep``: as in
    :func:`~rewriter.caffe.initcheck.net_init_findings` (the graphs, for the set-up checks)."""
    from rewriter.text.cst import Document

    from .initcheck import net_init_findings
    from .layer_params import BVLC_LAYER_TYPES

    found = net_init_findings(message, sorted(BVLC_LAYER_TYPES), keep)
    if found.error is None and not found.warnings:
        return []
    doc = source if isinstance(source, Document) else _read(source)
    if doc is None:  # the file went away meanwhile: say it unlocated
        doc = Document("", (), 0, path=str(source))
    out = [diagnostic(w, doc, severity="warning") for w in found.warnings]
    if found.error is not None:
        exact = found.error.location == "upgrade_proto.cpp" and found.error.layer is None
        out.append(diagnostic(found.error, doc, exact_index=exact))
    return out


def _read(path: str | Path) -> Document | None:
    from rewriter.text.cst import parse
    from rewriter.text.fileio import read_text

    try:
        return parse(read_text(path), str(path))
    except (OSError, RewriterError):
        return None


def diagnostic(
    error: CaffeError,
    doc: Document,
    phase: str | None = None,
    *,
    path: str | None = None,
    exact_index: bool = False,
    severity: str = "error",
) -> Diagnostic:
    """The located :class:`Diagnostic` of ``error`` in ``doc`` (no location if none fits).

    ``phase`` defaults to the one the error was raised in; ``path`` to ``doc.path``.
    """
    phase = phase or error.phase
    # the in-memory upgrade refuses a file whatever the phase
    where = f" in phase {phase}" if phase and error.location != "upgrade_proto.cpp" else ""
    loc = locate_error(error, doc, exact_index=exact_index)
    if loc is not None and path is not None:
        loc = Location(path, loc.line, loc.col, loc.line_text)
    verb = "refuses" if severity == "error" else "would refuse"
    return Diagnostic(
        severity,
        f"Caffe {verb} the net{where} ({error.location}): {error.message}",
        loc,
        code="net-init",
        hint=error.hint,
    )


def locate_error(error: CaffeError, doc: Document, *, exact_index: bool = False) -> Location | None:
    """Where ``error`` points in ``doc``: its field's value, else the layer's name or block.

    ``exact_index``: ``layer_index`` counts the file's own layer blocks (no name to check).
    """
    blocks = [f for f in doc.fields if f.name in ("layer", "layers") and _body(f) is not None]
    block = _find_block(blocks, error.layer, error.layer_index, exact_index, error.phase)
    offset: int | None = None
    if block is None and error.layer is None and error.layer_index is None and error.field:
        offset = _find(doc.body, error.field, error.index)[0]  # a net-level field
    elif block is None:
        offset = _legacy_input(doc, error)
    else:
        offset = _in_block(block, error.field, error.index)
    if offset is None:
        return None
    return doc.location(offset)


def _body(f: Field) -> MessageBody | None:
    from rewriter.text.cst import MessageBody

    return f.body if isinstance(f.body, MessageBody) else None


def _nested(block: Field) -> MessageBody | None:
    """A V0 connection's inner ``layer { name type ... }`` block."""
    body = _body(block)
    inner = body.get("layer") if body is not None and block.name == "layers" else None
    return _body(inner) if inner is not None else None


def _name_of(block: Field) -> str | None:
    for body in (_body(block), _nested(block)):
        f = body.get("name") if body is not None else None
        if f is not None and f.body is None:
            return _scalar(f.value_text)
    return None


def _scalar(token: str) -> str:
    from rewriter.text.cst import decode_string

    token = token.strip()
    if token[:1] in "\"'" and len(token) >= 2:
        try:
            return decode_string(token)
        except ValueError:
            return token[1:-1]
    return token


def _find_block(
    blocks: list[Field], name: str | None, index: int | None, exact: bool, phase: str | None
) -> Field | None:
    if exact or name is None:
        return blocks[index] if index is not None and 0 <= index < len(blocks) else None
    guesses = [] if index is None else [index, index - 1]
    for i in guesses:
        if 0 <= i < len(blocks) and _name_of(blocks[i]) == name:
            return blocks[i]
    named = [i for i, b in enumerate(blocks) if _name_of(b) == name]
    if not named:
        return None
    if index is None and phase is not None and len(named) > 1:
        # one name per phase (a TRAIN and a TEST "data" layer): the one the phase keeps
        named = [i for i in named if _admits(blocks[i], phase)] or named
    near = index if index is not None else 0
    return blocks[min(named, key=lambda i: abs(i - near))]


def _admits(block: Field, phase: str) -> bool:
    """The block's include/exclude ``phase:`` rules keep it in ``phase`` (stages ignored)."""
    body = _body(block)
    if body is None:
        return True

    def phases(rule: str) -> list[str]:
        out = []
        for f in body.get_all(rule):
            sub = _body(f)
            p = sub.get("phase") if sub is not None else None
            if p is not None:
                out.append(p.value_text.strip())
        return out

    include = phases("include")
    if include and phase not in include:
        return False
    return phase not in phases("exclude")


def _in_block(block: Field, field: str | None, index: int | None) -> int | None:
    body = _body(block)
    assert body is not None
    nested = _nested(block)
    if field:
        partial: int | None = None  # the deepest enclosing message written, e.g. param[1]
        for where, path in _spellings(block.name, nested is not None, field):
            target = nested if where == "nested" else body
            if target is None:
                continue
            at, complete = _find(target, path, index)
            if complete:
                return at
            if partial is None and at is not None and path.count(".") > 0:
                partial = at
        if partial is not None:
            return partial
    for target in (body, nested):
        name = target.get("name") if target is not None else None
        if name is not None:
            return name.value_start
    return block.name_start


def _spellings(kind: str, v0: bool, field: str) -> list[tuple[str, str]]:
    """Where a V2 field path may be written in a ``layer``, V1 ``layers`` or V0 block."""
    out = [("body", field)]
    if kind != "layers":
        return out
    m = re.fullmatch(r"param(\[\d+\])?\.(\w+)", field)
    if m is not None:
        table = _V0_PARAM if v0 else _V1_PARAM
        if m.group(2) in table:
            out.append(("nested" if v0 else "body", table[m.group(2)] + (m.group(1) or "")))
    if v0:
        last = field.rsplit(".", 1)[-1]
        out += [("nested", field), ("nested", _V0_FIELDS.get(last, last))]
    return out


def _find(body: MessageBody, path: str, index: int | None) -> tuple[int | None, bool]:
    """Offset of the value ``path`` names in ``body`` (see the module's contract), and whether
    it was found whole; if not, the offset of the deepest message on the way (or None)."""
    segments = path.split(".")
    pending = index
    current: MessageBody | None = body
    offset: int | None = None
    for k, segment in enumerate(segments):
        m = _SEGMENT.fullmatch(segment)
        if m is None or current is None:
            return offset, False
        occurrences = list(_values(current, m.group(1)))
        last = k == len(segments) - 1
        if m.group(2) is not None:
            pick = int(m.group(2))
        elif pending is not None and (len(occurrences) > 1 or last):
            pick, pending = pending, None
        else:
            pick = 0
        if pick >= len(occurrences):
            return offset, False
        offset, current = occurrences[pick]
    return offset, True


def _values(body: MessageBody, name: str) -> Iterator[tuple[int, MessageBody | None]]:
    """Every value written for ``name``: (offset for the caret, its body if a message)."""
    from rewriter.text.cst import ListBody, MessageBody

    for f in body.get_all(name):
        if isinstance(f.body, MessageBody):
            yield f.name_start, f.body
        elif isinstance(f.body, ListBody):
            for item in f.body.items:
                if isinstance(item, MessageBody):
                    yield item.start, item
                else:
                    yield item[1], None
        else:
            yield f.value_start, None


def _legacy_input(doc: Document, error: CaffeError) -> int | None:
    """The ``Input`` layer the upgrade makes of legacy ``input:`` fields: point at those."""
    if error.layer != "input":
        return None
    return _find(doc.body, "input", error.index if error.field == "top" else 0)[0]
