"""A Caffe-free ``caffe`` for pycaffe NetSpec scripts, and a runner that executes them.

pycaffe's ``python/caffe/net_spec.py`` (BVLC master) is a thin layer over the generated
``caffe_pb2`` module: ``L.Convolution(bottom, kernel_size=3)`` makes a ``Function`` with one
``Top``; assigning tops to a ``NetSpec`` names them; ``NetSpec.to_proto()`` walks the tops in
assignment order, depth first through the inputs, and builds one ``LayerParameter`` per
function. This module reproduces those semantics exactly, backed by the bundled Caffe schema
(:func:`rewriter.schema.runtime.default_schema`) instead of a compiled Caffe:

* layer name = the name of the function's first top (its ``NetSpec`` attribute), an automatic
  ``<Type><n>`` name for unnamed tops, or the ``name=`` keyword (assigned last, so it wins);
* ``ntop`` (0 returns the ``Function`` itself, 2+ a tuple of tops), ``in_place=True`` (tops
  are the bottoms);
* keywords go into the type's ``*_param`` message when the layer type has one and the field
  exists there (``param_name_dict``), otherwise onto the ``LayerParameter`` itself (``param``,
  ``include``, ``loss_weight``, ``propagate_down``, ``name``, ``top``, ``bottom``...); a keyword
  ending in ``param`` always goes onto the layer;
* ``assign_proto``: lists fill repeated fields (a list of dicts adds messages), a scalar given
  to a repeated field becomes a one-element list, dicts fill messages;
* ``P.Pooling.MAX`` is ``caffe_pb2.PoolingParameter.MAX``; ``caffe.TRAIN``/``caffe.TEST``.

On top of that every ``Function`` remembers where the script created it (file, line, column
and the chain of calling lines inside the script), every ``NetSpec`` assignment and read
remembers its position, and every ``to_proto()`` call is recorded with the function behind
each layer: :mod:`rewriter.netspec.codemod` uses these records to find the exact call to
edit for a layer.

:func:`run_script` executes a user's script (this runs arbitrary code: it is only ever done
on an explicit request) with these modules in ``sys.modules`` as ``caffe``,
``caffe.net_spec``, ``caffe.proto`` and ``caffe.proto.caffe_pb2`` (restored afterwards), in a
temporary working directory, and collects the files the script wrote.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import sys
import tempfile
import threading
import traceback
import types
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewriter.errors import RewriterError

__all__ = [
    "Function",
    "LayerEntry",
    "NetOutput",
    "NetSpec",
    "ProtoRecord",
    "ScriptError",
    "ScriptRun",
    "Session",
    "Site",
    "Top",
    "assign_proto",
    "installed",
    "param_name_dict",
    "run_script",
]

_FAKE_MODULES = ("caffe", "caffe.net_spec", "caffe.proto", "caffe.proto.caffe_pb2")
_RUN_LOCK = threading.RLock()


class ScriptError(RewriterError):
    """The NetSpec script failed (syntax error, exception, unsupported caffe API...)."""


# --------------------------------------------------------------------------- source positions


@dataclass(frozen=True)
class Site:
    """A position in a script: 1-based lines, 0-based UTF-8 *byte* columns (as CPython keeps
    them; ``None`` on Python 3.10, where only the line is known)."""

    path: str
    line: int
    end_line: int | None = None
    col: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" + ("" if self.col is None else f":{self.col + 1}")


_POSITIONS: dict[int, tuple[Any, list[Any]]] = {}


def _frame_site(frame: types.FrameType) -> Site:
    code = frame.f_code
    path = code.co_filename
    lineno = frame.f_lineno
    co_positions = getattr(code, "co_positions", None)
    if co_positions is None:  # Python 3.10
        return Site(path, lineno)
    cached = _POSITIONS.get(id(code))
    if cached is None or cached[0] is not code:
        cached = (code, list(co_positions()))
        _POSITIONS[id(code)] = cached
    positions = cached[1]
    index = frame.f_lasti // 2
    if 0 <= index < len(positions):
        line, end_line, col, end_col = positions[index]
        if line is not None:
            return Site(path, line, end_line, col, end_col)
    return Site(path, lineno)


def _user_stack(frame: types.FrameType | None) -> tuple[Site, ...]:
    """Sites of the calling frames, innermost first, stopping at this package's own frames."""
    sites: list[Site] = []
    here = os.path.dirname(os.path.abspath(__file__))
    while frame is not None:
        filename = frame.f_code.co_filename
        if os.path.dirname(os.path.abspath(filename)) == here and sites:
            break
        if not filename.startswith("<frozen") and os.path.dirname(filename) != here:
            sites.append(_frame_site(frame))
        frame = frame.f_back
        if len(sites) >= 32:
            break
    return tuple(sites)


# --------------------------------------------------------------------------- sessions


@dataclass
class LayerEntry:
    """One layer of a ``to_proto()`` result and what made it."""

    function: Function
    #: "kwarg" (``name=``), "key" (a NetSpec attribute) or "auto" (``Convolution1``)
    name_source: str
    #: the NetSpec key the name came from (name_source "key")
    name_key: str | None
    #: per top: the NetSpec key that named it, None for automatic/in-place/keyword tops
    top_keys: tuple[str | None, ...]


@dataclass
class ProtoRecord:
    """One call of ``NetSpec.to_proto()`` / ``caffe.to_proto()``: the live message it returned."""

    net: Any
    entries: list[LayerEntry]
    netspec: NetSpec | None
    #: for NetSpec.to_proto: where each key was last assigned
    key_sites: dict[str, Site] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyAccess:
    """A ``n.key`` / ``n['key']`` read or write in the script."""

    netspec_id: int
    key: str
    site: Site
    write: bool


class Session:
    """The fake Caffe modules of one evaluation and everything they recorded."""

    def __init__(self, schema: Any = None) -> None:
        if schema is None:
            from rewriter.schema.runtime import default_schema

            schema = default_schema()
        self.schema = schema
        self.package: str = schema.package
        self.functions: list[Function] = []
        self.records: list[ProtoRecord] = []
        self.accesses: list[KeyAccess] = []
        self.layer_class: Any = schema.message_class(f"{self.package}.LayerParameter")
        self.net_class: Any = schema.message_class(f"{self.package}.NetParameter")
        self.caffe_pb2 = self._make_caffe_pb2()
        self.param_names: dict[str, str] = self._param_name_dict()
        self.modules = self._make_modules()

    # -- modules

    def _make_caffe_pb2(self) -> types.ModuleType:
        from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

        mod = types.ModuleType(
            "caffe.proto.caffe_pb2", "Caffe's messages, from rewriter's bundled schema."
        )
        for name in self.schema.file_names:
            fd = self.schema.pool.FindFileByName(name)
            if fd.package != self.package:
                continue
            for msg_name in fd.message_types_by_name:
                setattr(mod, msg_name, self.schema.message_class(f"{self.package}.{msg_name}"))
            for enum_name, enum_desc in fd.enum_types_by_name.items():
                setattr(mod, enum_name, EnumTypeWrapper(enum_desc))
                for value in enum_desc.values:
                    setattr(mod, value.name, value.number)
        mod.DESCRIPTOR = self.schema.pool.FindFileByName(self.schema.file_names[-1])  # type: ignore[attr-defined]
        return mod

    def _param_name_dict(self) -> dict[str, str]:
        return param_name_dict(self.layer_class)

    def _make_modules(self) -> dict[str, types.ModuleType]:
        session = self
        net_spec = types.ModuleType("caffe.net_spec", "pycaffe's net_spec, Caffe-free.")
        ns: dict[str, Any] = {
            "Top": Top,
            "Function": Function,
            "NetSpec": NetSpec,
            "Layers": Layers,
            "Parameters": Parameters,
            "layers": Layers(session),
            "params": Parameters(session),
            "to_proto": lambda *tops: to_proto(*tops, session=session),
            "assign_proto": assign_proto,
            "param_name_dict": lambda: dict(session.param_names),
            "_param_names": session.param_names,
            "caffe_pb2": self.caffe_pb2,
        }
        net_spec.__dict__.update(ns)
        proto = types.ModuleType("caffe.proto")
        proto.__path__ = []
        proto.caffe_pb2 = self.caffe_pb2  # type: ignore[attr-defined]
        caffe = types.ModuleType("caffe", "rewriter's Caffe-free stand-in for pycaffe.")
        caffe.__path__ = []
        caffe.__dict__.update(
            {
                "NetSpec": NetSpec,
                "layers": ns["layers"],
                "params": ns["params"],
                "to_proto": ns["to_proto"],
                "net_spec": net_spec,
                "proto": proto,
                "TRAIN": 0,
                "TEST": 1,
                "set_mode_cpu": _noop,
                "set_mode_gpu": _noop,
                "set_device": _noop,
                "set_random_seed": _noop,
                "__getattr__": _caffe_missing,
            }
        )
        return {
            "caffe": caffe,
            "caffe.net_spec": net_spec,
            "caffe.proto": proto,
            "caffe.proto.caffe_pb2": self.caffe_pb2,
        }

    # -- recording

    def new_net(self) -> Any:
        return self.net_class()


def param_name_dict(layer_class: Any) -> dict[str, str]:
    """pycaffe's ``param_name_dict``: layer type -> ``<prefix>`` of its ``<prefix>_param``.

    Every LayerParameter field ending in ``_param``, keyed by its message type's name with the
    last ``len("Parameter")`` characters cut off (``Convolution`` -> ``convolution``).
    """
    layer = layer_class()
    names = [f.name for f in layer.DESCRIPTOR.fields if f.name.endswith("_param")]
    type_names = [type(getattr(layer, s)).__name__ for s in names]
    return dict(
        zip(
            [s[: -len("Parameter")] for s in type_names],
            [s[: -len("_param")] for s in names],
            strict=True,
        )
    )


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _caffe_missing(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"caffe.{name} is not available: rewriter runs NetSpec scripts without Caffe and "
        "provides only caffe.NetSpec, caffe.layers, caffe.params, caffe.to_proto, "
        "caffe.TRAIN/TEST and caffe.proto.caffe_pb2"
    )


_DEFAULT_SESSION: Session | None = None
_ACTIVE: list[Session] = []


def _session() -> Session:
    global _DEFAULT_SESSION
    if _ACTIVE:
        return _ACTIVE[-1]
    if _DEFAULT_SESSION is None:
        _DEFAULT_SESSION = Session()
    return _DEFAULT_SESSION


# --------------------------------------------------------------------------- net_spec proper


def assign_proto(proto: Any, name: str, val: Any) -> None:
    """Assign a Python value to a message field the way pycaffe does (recursively).

    Lists fill repeated fields (a list whose first item is a dict adds one message per item),
    dicts fill messages, a non-list given to a repeated field is wrapped in a list, anything
    else is ``setattr``.
    """
    is_repeated_field = hasattr(getattr(proto, name), "extend")
    if is_repeated_field and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if isinstance(val[0], dict):
            for item in val:
                proto_item = getattr(proto, name).add()
                for k, v in item.items():
                    assign_proto(proto_item, k, v)
        else:
            getattr(proto, name).extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(getattr(proto, name), k, v)
    else:
        setattr(proto, name, val)


class Top:
    """A single output blob of a layer (one of the ``ntop`` tops of a Function)."""

    def __init__(self, fn: Function, n: int) -> None:
        self.fn = fn
        self.n = n

    def to_proto(self) -> Any:
        """A NetParameter with every layer needed to compute this top (automatic names)."""
        return to_proto(self, session=self.fn.session)

    def _update(self, params: dict[str, Any]) -> None:
        self.fn._update(params)

    def _to_proto(self, layers: Any, names: dict[Any, str], autonames: Counter[str]) -> Any:
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its input tops and its keyword parameters."""

    def __init__(
        self,
        type_name: str,
        inputs: Sequence[Any],
        params: dict[str, Any],
        session: Session | None = None,
        stack: tuple[Site, ...] = (),
    ) -> None:
        self.session = session or _session()
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(inp)})")
        self.inputs = tuple(inputs)
        self.params = params
        self.ntop: int = self.params.get("ntop", 1)
        if "ntop" in self.params:
            del self.params["ntop"]
        self.in_place: bool = self.params.get("in_place", False)
        if "in_place" in self.params:
            del self.params["in_place"]
        self.tops = tuple(Top(self, n) for n in range(self.ntop))
        #: where the script called ``L.<type>(...)``, then the script lines calling that code
        self.stack = stack
        self.index = len(self.session.functions)
        self.session.functions.append(self)

    @property
    def site(self) -> Site | None:
        return self.stack[0] if self.stack else None

    def __repr__(self) -> str:
        return f"<Function {self.type_name} #{self.index} at {self.site}>"

    def _get_name(self, names: dict[Any, str], autonames: Counter[str]) -> str:
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top: Top, names: dict[Any, str], autonames: Counter[str]) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _update(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def _to_proto(self, layers: Any, names: dict[Any, str], autonames: Counter[str]) -> None:
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = self.session.layer_class()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        param_names = self.session.param_names
        for k, v in self.params.items():
            # special case to handle generic *params
            if k.endswith("param"):
                assign_proto(layer, k, v)
            else:
                try:
                    assign_proto(getattr(layer, param_names[self.type_name] + "_param"), k, v)
                except (AttributeError, KeyError):
                    assign_proto(layer, k, v)
        layers[self] = layer


def _record(
    session: Session,
    net: Any,
    layers: dict[Function, Any],
    keyed: dict[Any, str],
    netspec: NetSpec | None,
) -> None:
    entries: list[LayerEntry] = []
    for fn, layer in layers.items():
        if "name" in fn.params and layer.name == str(fn.params["name"]):
            source, key = "kwarg", None
        elif fn in keyed:
            source, key = "key", keyed[fn]
        elif fn.tops and fn.tops[0] in keyed:
            source, key = "key", keyed[fn.tops[0]]
        else:
            source, key = "auto", None
        top_keys = tuple(None if fn.in_place else keyed.get(t) for t in fn.tops)
        entries.append(LayerEntry(fn, source, key, top_keys))
    sites = dict(netspec._rw_sites) if netspec is not None else {}
    session.records.append(ProtoRecord(net, entries, netspec, sites))


def to_proto(*tops: Any, session: Session | None = None) -> Any:
    """A NetParameter with every layer needed to compute all ``tops`` (automatic names)."""
    session = session or (tops[0].fn.session if tops else _session())
    layers: dict[Function, Any] = OrderedDict()
    autonames: Counter[str] = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = session.new_net()
    net.layer.extend(layers.values())
    _record(session, net, layers, {}, None)
    return net


class NetSpec:
    """Tops assigned as attributes (or items) are named after them; ``to_proto()`` builds the
    NetParameter of every assigned top and everything it needs, in assignment order."""

    def __init__(self) -> None:
        super().__setattr__("tops", OrderedDict())
        super().__setattr__("_rw_sites", {})
        super().__setattr__("_rw_session", _session())

    def _rw_assign(self, name: str, value: Any, depth: int) -> None:
        frame = sys._getframe(depth + 1)
        site = _frame_site(frame)
        self._rw_sites[name] = site
        self._rw_session.accesses.append(KeyAccess(id(self), name, site, True))
        self.tops[name] = value

    def _rw_read(self, name: str, depth: int) -> Any:
        value = self.tops[name]
        site = _frame_site(sys._getframe(depth + 1))
        self._rw_session.accesses.append(KeyAccess(id(self), name, site, False))
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self._rw_assign(name, value, 1)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._rw_read(name, 1)

    def __setitem__(self, key: str, value: Any) -> None:
        self._rw_assign(key, value, 1)

    def __getitem__(self, item: str) -> Any:
        return self._rw_read(item, 1)

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def keys(self) -> list[str]:
        return list(self.tops)

    def vals(self) -> list[Any]:
        return list(self.tops.values())

    def update(self, name: str, params: dict[str, Any]) -> None:
        self.tops[name]._update(params)

    def to_proto(self) -> Any:
        names: dict[Any, str] = {v: k for k, v in self.tops.items()}
        keyed = dict(names)
        autonames: Counter[str] = Counter()
        layers: dict[Function, Any] = OrderedDict()
        for _name, top in self.tops.items():
            top._to_proto(layers, names, autonames)
        session: Session = self._rw_session
        net = session.new_net()
        net.layer.extend(layers.values())
        _record(session, net, layers, keyed, self)
        return net


class Layers:
    """``L.<Type>(*bottoms, **params)`` makes a layer of that type (``L`` in scripts)."""

    def __init__(self, session: Session | None = None) -> None:
        self._session = session

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        session = self._session or _session()

        def layer_fn(*args: Any, **kwargs: Any) -> Any:
            stack = _user_stack(sys._getframe(1))
            fn = Function(name, args, kwargs, session, stack)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        return layer_fn


class Parameters:
    """``P.<Layer>.<CONSTANT>`` is ``caffe_pb2.<Layer>Parameter.<CONSTANT>`` (``P`` in scripts)."""

    def __init__(self, session: Session | None = None) -> None:
        self._session = session

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        pb2 = (self._session or _session()).caffe_pb2

        class Param:
            def __getattr__(self, param_name: str) -> Any:
                return getattr(getattr(pb2, name + "Parameter"), param_name)

        return Param()


# --------------------------------------------------------------------------- running scripts


@contextlib.contextmanager
def installed(session: Session) -> Iterator[Session]:
    """Make ``import caffe`` (and its submodules) give this session's modules, then restore."""
    with _RUN_LOCK:
        saved = {name: sys.modules.get(name) for name in _FAKE_MODULES}
        sys.modules.update(session.modules)
        _ACTIVE.append(session)
        try:
            yield session
        finally:
            _ACTIVE.pop()
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


@dataclass
class NetOutput:
    """One file the script wrote (or the value its ``--function`` returned)."""

    name: str
    text: str
    #: "net", "solver" or "other" (not Caffe text format)
    kind: str = "other"
    message: Any = None
    error: str | None = None
    #: the to_proto() call that produced it, when it can be traced
    record: ProtoRecord | None = None


@dataclass
class ScriptRun:
    path: str
    outputs: list[NetOutput]
    session: Session
    stdout: str = ""

    @property
    def nets(self) -> list[NetOutput]:
        return [o for o in self.outputs if o.kind == "net"]


def _parse_output(session: Session, out: NetOutput) -> None:
    from google.protobuf import text_format

    errors: list[str] = []
    for kind, full in (("net", "NetParameter"), ("solver", "SolverParameter")):
        cls = session.schema.message_class(f"{session.package}.{full}")
        msg = cls()
        try:
            text_format.Parse(out.text, msg)
        except Exception as e:  # text_format.ParseError and decode problems
            errors.append(str(e))
            continue
        out.kind, out.message = kind, msg
        return
    out.error = errors[0] if errors else None


def _trace(session: Session, out: NetOutput) -> None:
    if out.kind != "net":
        return
    for record in reversed(session.records):
        if record.net == out.message:
            out.record = record
            return
    names = [layer.name for layer in out.message.layer]
    for record in reversed(session.records):
        if [layer.name for layer in record.net.layer] == names:
            out.record = record
            return


class _Capture:
    """The ``open`` a script sees: writes land in the scratch folder (and are collected)."""

    def __init__(self, scratch: Path, script_dir: Path) -> None:
        self.scratch = scratch
        self.script_dir = script_dir
        self.written: dict[str, Path] = {}

    def __call__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, int):
            return builtins.open(file, mode, *args, **kwargs)
        name = os.fsdecode(os.fspath(file))
        if any(c in mode for c in "wax+"):
            target = self._target(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.written.setdefault(name, target)
            return builtins.open(target, mode, *args, **kwargs)
        if name in self.written:
            return builtins.open(self.written[name], mode, *args, **kwargs)
        path = Path(name)
        if not path.is_absolute() and not (self.scratch / path).exists():
            candidate = self.script_dir / path
            if candidate.exists():
                return builtins.open(candidate, mode, *args, **kwargs)
        return builtins.open(file, mode, *args, **kwargs)

    def _target(self, name: str) -> Path:
        path = Path(name)
        if path.is_absolute():
            try:
                rel = path.resolve().relative_to(self.script_dir.resolve())
            except ValueError:
                rel = Path("_abs") / path.name
            return self.scratch / rel
        return self.scratch / path


def _script_error(path: str, exc: BaseException) -> ScriptError:
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or path}:{exc.lineno or 0}:{exc.offset or 0}"
        return ScriptError(f"{where}: syntax error in the NetSpec script: {exc.msg}")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    where = f"{path}:{frames[-1].lineno}" if frames else path
    lines = [f"{where}: the NetSpec script failed: {type(exc).__name__}: {exc}"]
    for f in frames:
        lines.append(f"  {f.filename}:{f.lineno} in {f.name}: {(f.line or '').strip()}")
    return ScriptError("\n".join(lines))


def run_script(
    path: str | os.PathLike[str],
    *,
    source: str | None = None,
    function: str | None = None,
    schema: Any = None,
    argv: Sequence[str] = (),
) -> ScriptRun:
    """Execute a NetSpec script with the Caffe-free ``caffe`` and collect what it produced.

    This runs the script's code. It runs as ``__main__`` (with ``sys.argv = [path, *argv]``)
    in a temporary working directory; files it opens for writing through ``open`` land
    there too (absolute paths included) and are returned as outputs, in the order written.
    With ``function``, the script runs as a module (its ``__main__`` block is skipped) and
    ``function()`` is called: it must return a NetParameter, a NetSpec or text.

    ``source`` replaces the file's content (the path still names it in positions and errors).
    """
    script = Path(path).resolve()
    text = source
    if text is None:
        from rewriter.text.fileio import read_text

        text = read_text(script)
    filename = str(script)
    try:
        code = compile(text, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise _script_error(filename, e) from None
    session = Session(schema)
    stdout = io.StringIO()
    outputs: list[NetOutput] = []
    with tempfile.TemporaryDirectory(prefix="rewriter-netspec-") as tmp, installed(session):
        scratch = Path(tmp)
        capture = _Capture(scratch, script.parent)
        module_name = "__main__" if function is None else "__netspec_script__"
        globs: dict[str, Any] = {
            "__name__": module_name,
            "__file__": filename,
            "__builtins__": builtins,
            "open": capture,
        }
        saved_argv, saved_path, saved_cwd = sys.argv, list(sys.path), os.getcwd()
        saved_modules = set(sys.modules)
        sys.argv = [filename, *argv]
        sys.path.insert(0, str(script.parent))
        result: Any = None
        try:
            os.chdir(scratch)
            with contextlib.redirect_stdout(stdout):
                try:
                    exec(code, globs)
                except SystemExit as e:
                    if e.code not in (None, 0):
                        raise ScriptError(
                            f"{filename}: the script exited with {e.code!r}"
                        ) from None
                if function is not None:
                    fn = globs.get(function)
                    if not callable(fn):
                        raise ScriptError(f"{filename}: defines no function {function!r}")
                    result = fn()
        except ScriptError:
            raise
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            raise _script_error(filename, e) from None
        finally:
            os.chdir(saved_cwd)
            sys.argv = saved_argv
            sys.path[:] = saved_path
            # modules the script imported (its own helpers) saw this session's caffe: forget
            # them, so the next run imports them afresh
            for name in set(sys.modules) - saved_modules:
                if name not in _FAKE_MODULES:
                    sys.modules.pop(name, None)
            _POSITIONS.clear()
        if function is not None:
            outputs.append(_function_output(session, function, result, filename))
        else:
            seen: set[Path] = set()
            for name, target in capture.written.items():
                if target.is_file():
                    seen.add(target)
                    outputs.append(NetOutput(name, _read(target)))
            for p in sorted(scratch.rglob("*")):
                if p.is_file() and p not in seen:
                    outputs.append(NetOutput(str(p.relative_to(scratch)), _read(p)))
    for out in outputs:
        if out.message is None:
            _parse_output(session, out)
        _trace(session, out)
    return ScriptRun(filename, outputs, session, stdout.getvalue())


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "surrogateescape")


def _function_output(session: Session, function: str, result: Any, filename: str) -> NetOutput:
    name = f"{function}()"
    if isinstance(result, NetSpec):
        result = result.to_proto()
    if isinstance(result, str):
        return NetOutput(name, result)
    if isinstance(result, session.net_class):
        return NetOutput(name, str(result), "net", result)
    raise ScriptError(
        f"{filename}: {function}() returned {type(result).__name__}, "
        "expected a NetParameter, a NetSpec or text"
    )
