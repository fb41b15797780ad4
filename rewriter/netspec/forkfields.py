"""A fork's fields in an exported NetSpec script: where they go and their text, verbatim.

``export netspec --lenient`` rebuilds the message BVLC's schema knows with ``L.*`` calls; what
only the fork knows (SSD's ``permute_param``, ``ceil_mode``, ``normalization: PRE_FIXED``) cannot
be a keyword argument checked against BVLC's ``caffe_pb2``, so the script merges each such field's
own text into its message with ``text_format.Merge``, as the fork's ``caffe_pb2`` will read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rewriter.text.cst import Field, MessageBody

if TYPE_CHECKING:
    from google.protobuf.descriptor import Descriptor

    from rewriter.text.cst import Document

__all__ = ["fork_fields"]


def _unknown_value(f: Field, info: Any) -> bool:
    """A scalar enum field whose value the schema does not have (the lenient binder's
    ``unknown-enum`` warning): the field is not in the message, so it goes verbatim too."""
    if info.enum_names is None or f.body is not None:
        return False
    text = f.value_text.strip()
    if text in info.enum_names:
        return False
    try:
        return int(text, 0) not in (info.enum_numbers or ())
    except ValueError:
        return True


def fork_fields(doc: Document, desc: Descriptor, var: str = "net") -> list[tuple[str, str]]:
    """(Python expression of the message holding it, the field's text) for each field or enum
    value the schema does not know, in file order. Iterative: nesting depth is the file's."""
    from rewriter.schema.bind import field_table

    out: list[tuple[str, str]] = []
    stack: list[tuple[list[Field], Descriptor, str]] = [(list(doc.fields), desc, var)]
    while stack:
        fields, d, where = stack.pop()
        table = field_table(d)
        seen: dict[str, int] = {}
        later: list[tuple[list[Field], Descriptor, str]] = []
        for f in fields:
            info = table.get(f.name)
            text = f.name + f.separator + f.value_text
            if info is None or (info.message is None and _unknown_value(f, info)):
                out.append((where, text))
                continue
            if info.message is None or not isinstance(f.body, MessageBody):
                continue
            k = seen.get(f.name, 0)
            seen[f.name] = k + 1
            sub = f"{where}.{f.name}[{k}]" if info.repeated else f"{where}.{f.name}"
            later.append((list(f.body.fields), info.message, sub))
        stack.extend(reversed(later))
    return out
