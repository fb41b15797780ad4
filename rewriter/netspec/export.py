"""A prototxt net as a readable pycaffe NetSpec script that rebuilds it exactly.

``export_netspec(net)`` writes the script the way people write NetSpec by hand::

    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)

and falls back to NetSpec's less common (but fully supported) spellings only where a net needs
them, so that running the script gives a ``NetParameter`` *equal* to the input (protobuf
equality, field presence included):

* a layer's name comes from the NetSpec attribute of its first top; ``name="..."`` is added
  when the layer is named differently (pycaffe assigns ``name`` last, so it wins);
* an in-place layer (tops == bottoms) is ``L.X(n.prev, in_place=True)``, assigned to an
  attribute named after the layer;
* a blob written by two layers without being in place (TRAIN/TEST data layers, duplicate
  tops) can be a NetSpec attribute only once: the other writers are ``ntop=0`` layers whose
  tops are given by name (``top=["data", "label"]``), and readers use the first writer's top,
  which carries the same name;
* a bottom that no earlier layer produces (legacy ``input:`` fields, nets split over files)
  is given by name, ``bottom="data"``; bottoms after it in the list follow by name too;
* ``net.name``, ``input``, ``input_shape``, ``force_backward``, ``state``... are set on the
  returned message; the few things keywords cannot say (a present but empty message such as
  ``convolution_param {}``, a layer without ``name``) are set after ``to_proto()`` on
  ``net.layer[i]``.

Keyword routing follows pycaffe: short keywords (``kernel_size=5``) are used when the layer's
type has a ``*_param`` message holding that field, otherwise the whole message is written
(``convolution_param=dict(...)`` for a Deconvolution layer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rewriter.errors import RewriterError
from rewriter.schema.runtime import is_repeated

from .render import Atom, Call, Expr, ListExpr, Renderer, fmt, is_identifier, is_message, py_str

__all__ = ["ExportError", "export_netspec", "export_file", "netspec_key_expr"]

#: NetSpec attributes that are methods or internals: such keys are written ``n["keys"]``
_RESERVED = frozenset({"tops", "to_proto", "keys", "vals", "update"})
_STRIPPED = frozenset({"ntop", "in_place"})  # pycaffe removes these keywords from params
_LAYER_OWN = frozenset({"name", "type", "bottom", "top"})


class ExportError(RewriterError):
    """The net cannot be exported (a legacy V0/V1 net, for instance)."""


def netspec_key_expr(key: str, var: str = "n") -> str:
    """``n.key`` when that is valid Python and not a NetSpec method, else ``n["key"]``."""
    if is_identifier(key) and key not in _RESERVED and not key.startswith("_"):
        return f"{var}.{key}"
    return f"{var}[{py_str(key)}]"


@dataclass
class _Plan:
    index: int
    layer: Any
    mode: str = "natural"  # natural | inplace | explicit
    inputs: list[tuple[int, int]] = field(default_factory=list)
    rest: list[str] = field(default_factory=list)
    key: str | None = None


def _type_param_fields(layer_class: Any, param_names: dict[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    desc = layer_class.DESCRIPTOR
    for type_name, prefix in param_names.items():
        fd = desc.fields_by_name.get(prefix + "_param")
        if fd is not None and fd.message_type is not None:
            out[type_name] = {f.name for f in fd.message_type.fields}
    return out


class _Exporter:
    def __init__(self, net: Any, var: str = "n") -> None:
        from .evaluator import param_name_dict

        self.net = net
        self.var = var
        self.layer_class = type(type(net)().layer.add())
        self.param_names = param_name_dict(self.layer_class)
        self.type_fields = _type_param_fields(self.layer_class, self.param_names)
        self.r = Renderer()
        self.fixups: list[str] = []
        self.uses_assign_proto = False

    # -- planning

    def plan(self) -> list[_Plan]:
        plans: list[_Plan] = []
        current: dict[str, tuple[int, int]] = {}
        claimed: set[str] = set()
        for i, layer in enumerate(self.net.layer):
            p = _Plan(i, layer)
            bottoms, tops = list(layer.bottom), list(layer.top)
            k = 0
            while k < len(bottoms) and bottoms[k] in current:
                k += 1
            p.inputs = [current[b] for b in bottoms[:k]]
            p.rest = bottoms[k:]
            if bottoms and k == len(bottoms) and tops == bottoms:
                p.mode = "inplace"
                current[bottoms[0]] = (i, 0)
            elif tops and len(set(tops)) == len(tops) and not claimed.intersection(tops):
                p.mode = "natural"
                claimed.update(tops)
                for j, t in enumerate(tops):
                    current[t] = (i, j)
            else:
                p.mode = "explicit"
            plans.append(p)
        used = set(claimed)
        for p in plans:
            if p.mode == "natural":
                continue
            base = p.layer.name or p.layer.type.lower() or "layer"
            key, n = base, 1
            while key in used:
                n += 1
                key = f"{base}_{n}"
            used.add(key)
            p.key = key
        self.plans = plans
        return plans

    def top_expr(self, ref: tuple[int, int]) -> str:
        p = self.plans[ref[0]]
        if p.mode == "natural":
            return netspec_key_expr(p.layer.top[ref[1]], self.var)
        assert p.key is not None
        return netspec_key_expr(p.key, self.var)

    # -- one layer

    def layer_statement(self, p: _Plan) -> str:
        layer = p.layer
        args: list[tuple[str | None, Expr]] = [(None, Atom(self.top_expr(r))) for r in p.inputs]
        if p.mode == "inplace":
            args.append(("in_place", Atom("True")))
        default_name = layer.top[0] if p.mode == "natural" else p.key
        if not layer.HasField("name"):
            self.fixups.append(f"net.layer[{p.index}].ClearField('name')")
        elif layer.name != default_name:
            args.append(("name", Atom(py_str(layer.name))))
        if not layer.HasField("type"):
            self.fixups.append(f"net.layer[{p.index}].ClearField('type')")
        kwargs: list[tuple[str, Expr]] = []
        late: list[tuple[str, Expr]] = []
        type_name = layer.type
        type_param = self.param_names.get(type_name)
        type_param_field = f"{type_param}_param" if type_param is not None else None
        short_ok = self.type_fields.get(type_name, set())
        for fd, value in layer.ListFields():
            if fd.name in _LAYER_OWN:
                continue
            path = f"net.layer[{p.index}].{fd.name}"
            if fd.name == type_param_field and self._can_shorten(value):
                if not value.ListFields():
                    self.fixups.append(f"{path}.SetInParent()")
                for sub_fd, sub_value in value.ListFields():
                    kwargs.append(
                        (sub_fd.name, self._field(sub_fd, sub_value, f"{path}.{sub_fd.name}"))
                    )
                continue
            routed_to_layer = (
                fd.name.endswith("param") or fd.name not in short_ok
            ) and fd.name not in _STRIPPED
            if routed_to_layer:
                late.append((fd.name, self._field(fd, value, path)))
            else:
                self.uses_assign_proto = True
                fix = fmt(self._field(fd, value, path), 4, 99, 30)
                self.fixups.append(f"assign_proto(net.layer[{p.index}], {py_str(fd.name)}, {fix})")
        kwargs.extend(late)
        if p.rest:
            kwargs.append(("bottom", self._strings(p.rest)))
        if p.mode == "explicit" and layer.top:
            kwargs.append(("top", self._strings(list(layer.top))))
        for k, v in kwargs:
            if is_identifier(k):
                args.append((k, v))
            else:
                args.append((None, Atom("**{" + py_str(k) + ": " + fmt(v) + "}")))
        if p.mode == "explicit":
            args.append(("ntop", Atom("0")))
        elif p.mode == "natural" and len(layer.top) != 1:
            args.append(("ntop", Atom(str(len(layer.top)))))
        func = f"L.{type_name}" if is_identifier(type_name) else f"getattr(L, {py_str(type_name)})"
        call = Call(func, args)
        if p.mode == "natural":
            target = ", ".join(netspec_key_expr(t, self.var) for t in layer.top)
        else:
            assert p.key is not None
            target = netspec_key_expr(p.key, self.var)
        return f"    {target} = {fmt(call, 4, 99, len(target) + 3)}"

    def _can_shorten(self, value: Any) -> bool:
        for fd, _ in value.ListFields():
            name = fd.name
            if name.endswith("param") or name in _STRIPPED or not is_identifier(name):
                return False
        return True

    def _field(self, fd: Any, value: Any, path: str) -> Expr:
        before = len(self.r.empty_messages)
        expr = self.r.field(fd, value, path, unwrap=fd.name not in ("param", "propagate_down"))
        for empty in self.r.empty_messages[before:]:
            self.fixups.append(f"{empty}.SetInParent()")
        del self.r.empty_messages[before:]
        return expr

    @staticmethod
    def _strings(items: list[str]) -> Expr:
        if len(items) == 1:
            return Atom(py_str(items[0]))
        return ListExpr([Atom(py_str(s)) for s in items])

    # -- the net

    def net_statements(self) -> list[str]:
        out: list[str] = []
        for fd, value in self.net.ListFields():
            if fd.name == "layer":
                continue
            if fd.name == "layers":
                raise ExportError(
                    "this net uses the legacy V1 'layers' field; upgrade it first "
                    "(Caffe's upgrade_net_proto_text) and export the upgraded file"
                )
            path = f"net.{fd.name}"
            expr = self._field(fd, value, path)
            if not is_message(fd) and not is_repeated(fd):
                out.append(f"    net.{fd.name} = {fmt(expr, 4, 99, len(fd.name) + 11)}")
            elif not is_message(fd):
                items = expr if isinstance(expr, ListExpr) else ListExpr([expr])
                out.append(f"    net.{fd.name}.extend({fmt(items, 4, 99, len(fd.name) + 15)})")
            else:
                self.uses_assign_proto = True
                head = f"    assign_proto(net, {py_str(fd.name)}, "
                out.append(head + fmt(expr, 4, 99, len(head) - 4) + ")")
        return out


def export_netspec(
    net: Any,
    *,
    source: str = "",
    output: str = "net.prototxt",
    function: str = "make_net",
    fork_fields: list[tuple[str, str]] | None = None,
) -> str:
    """A NetSpec script (text) whose ``function()`` returns a NetParameter equal to ``net``.

    Run as a program, the script writes ``output`` (``str(net)``, protobuf text format).
    ``fork_fields`` ((message expression, field text), :mod:`.forkfields`) are merged in
    verbatim at the end: the script then needs the fork's pycaffe.
    """
    import libcst

    ex = _Exporter(net)
    plans = ex.plan()
    body = [ex.layer_statement(p) for p in plans]
    net_lines = ex.net_statements()
    r = ex.r
    imports = ["import caffe"]
    if r.uses_caffe_pb2:
        imports.append("from caffe.proto import caffe_pb2")
    if ex.uses_assign_proto:
        imports.append("from caffe.net_spec import assign_proto")
    imports.append("from caffe import layers as L")
    if r.uses_params:
        imports.append("from caffe import params as P")
    merges = [
        f"    text_format.Merge({py_str(text)}, {where})" for where, text in fork_fields or []
    ]
    if merges:
        imports.insert(0, "from google.protobuf import text_format")
        merges.insert(
            0, "    # fields of the fork's caffe.proto, verbatim (BVLC's does not have them)"
        )
    title = net.name or os.path.basename(source) or "the net"
    origin = f" `rewriter export netspec {source}`" if source else " rewriter export netspec"
    lines = [
        f'"""{_doc(title)} as a pycaffe NetSpec script.',
        "",
        f"Generated by{origin}.",
        f"Running it writes {_doc(output)}; `rewriter netspec run` runs it without Caffe.",
        '"""',
        "",
        *imports,
        "",
        "",
        f"def {function}():",
        f'    """Build the net: returns a caffe_pb2.NetParameter ({len(plans)} layers)."""',
        f"    {ex.var} = caffe.NetSpec()",
        *body,
        f"    net = {ex.var}.to_proto()",
        *net_lines,
        *(f"    {fix}" for fix in ex.fixups),
        *merges,
        "    return net",
        "",
        "",
        'if __name__ == "__main__":',
        f'    with open({py_str(output)}, "w") as f:',
        f"        f.write(str({function}()))",
        "",
    ]
    text = "\n".join(lines)
    libcst.parse_module(text)  # the generator must only ever write valid Python
    return text


def _doc(text: str) -> str:
    return text.replace("\\", "/").replace('"""', "'''")


def export_file(
    path: str | os.PathLike[str],
    *,
    output: str | None = None,
    schema: Any = None,
    lenient: bool = False,
) -> str:
    """Export the net in ``path`` (current-format prototxt); raises on unreadable input.
    ``lenient``: a fork's fields and enum values are carried verbatim (:mod:`.forkfields`)."""
    from rewriter.api import load

    root = f"{(schema.package if schema else 'caffe')}.NetParameter"
    f = load(path, schema=schema, root=root, lenient=lenient)
    net = f.message
    extra = None
    if lenient and f.bound.warnings:
        from .forkfields import fork_fields

        extra = fork_fields(f.document, net.DESCRIPTOR)
    name = output or os.path.basename(os.fspath(path))
    source = os.fspath(path) if not lenient else f"--lenient {os.fspath(path)}"
    return export_netspec(net, source=source, output=name, fork_fields=extra)
