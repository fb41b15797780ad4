"""The Caffe schema at run time: descriptors and message classes in a private pool.

The committed descriptor set (``rewriter/data/caffe.desc``, compiled from ``proto/caffe.proto``,
the BVLC Caffe master schema) is loaded into its own ``DescriptorPool``, never the default one,
so a user's own ``caffe_pb2`` module can be imported in the same process without clashing.

A user with a Caffe fork can compile their fork's ``caffe.proto`` at run time with
:func:`schema_from_proto` (needs the optional ``grpcio-tools``: ``pip install
prototxt-rewriter[proto]``).

protobuf is imported lazily inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewriter.errors import RewriterError

if TYPE_CHECKING:
    from google.protobuf.descriptor import Descriptor
    from google.protobuf.descriptor_pool import DescriptorPool
    from google.protobuf.message import Message

__all__ = [
    "DEFAULT_PACKAGE",
    "Schema",
    "SchemaError",
    "compile_descriptor_set",
    "default_descriptor_path",
    "default_schema",
    "schema_from_descriptor_set",
    "schema_from_proto",
]

DEFAULT_PACKAGE = "caffe"
_PROTO_EXTRA_HINT = "install the 'proto' extra: pip install prototxt-rewriter[proto]"


class SchemaError(RewriterError):
    """A schema could not be loaded or compiled."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def _message_class_for(descriptor: Descriptor) -> type[Message]:
    """Build the concrete message class for ``descriptor`` (protobuf 4.21 through 7.x)."""
    from google.protobuf import message_factory

    get_message_class = getattr(message_factory, "GetMessageClass", None)
    if get_message_class is not None:
        cls: type[Message] = get_message_class(descriptor)
        return cls
    # protobuf < 4.22: the factory API.
    factory: Any = message_factory.MessageFactory(descriptor.file.pool)
    legacy_cls: type[Message] = factory.GetPrototype(descriptor)
    return legacy_cls


class Schema:
    """A set of proto files loaded into a private descriptor pool.

    ``package`` is the proto package holding ``NetParameter``/``SolverParameter`` (``caffe``).
    """

    def __init__(
        self, descriptor_set: bytes, *, package: str = DEFAULT_PACKAGE, origin: str = ""
    ) -> None:
        from google.protobuf import descriptor_pb2, descriptor_pool

        fds = descriptor_pb2.FileDescriptorSet()
        try:
            fds.ParseFromString(descriptor_set)
        except Exception as exc:  # DecodeError, but keep the message whatever the backend
            raise SchemaError(
                f"{origin or 'descriptor set'}: not a FileDescriptorSet: {exc}"
            ) from exc
        pool = descriptor_pool.DescriptorPool()
        for file_proto in fds.file:
            try:
                pool.AddSerializedFile(file_proto.SerializeToString())
            except Exception as exc:  # TypeError/ValueError depending on the backend
                raise SchemaError(
                    f"{origin or 'descriptor set'}: cannot load {file_proto.name}: {exc}"
                ) from exc
        self._pool = pool
        self._package = package
        self._origin = origin
        self._descriptor_set = bytes(descriptor_set)
        self._file_names = tuple(f.name for f in fds.file)
        self._classes: dict[str, type[Message]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Schema(package={self._package!r}, origin={self._origin!r})"

    @property
    def pool(self) -> DescriptorPool:
        """The private descriptor pool (never the protobuf default pool)."""
        return self._pool

    @property
    def package(self) -> str:
        return self._package

    @property
    def origin(self) -> str:
        """Where the schema came from (a path or a short description)."""
        return self._origin

    @property
    def descriptor_set(self) -> bytes:
        """The serialized ``FileDescriptorSet`` this schema was built from."""
        return self._descriptor_set

    @property
    def file_names(self) -> tuple[str, ...]:
        return self._file_names

    def descriptor(self, full_name: str) -> Descriptor:
        """The message descriptor named ``full_name`` (e.g. ``caffe.LayerParameter``)."""
        try:
            return self._pool.FindMessageTypeByName(full_name)
        except KeyError:
            raise SchemaError(
                f"message {full_name!r} is not defined in {self._origin or 'the schema'}"
            ) from None

    def has_message(self, full_name: str) -> bool:
        try:
            self._pool.FindMessageTypeByName(full_name)
        except KeyError:
            return False
        return True

    def message_class(self, full_name: str) -> type[Message]:
        """The concrete message class for ``full_name`` (cached per schema)."""
        cls = self._classes.get(full_name)
        if cls is None:
            with self._lock:
                cls = self._classes.get(full_name)
                if cls is None:
                    cls = _message_class_for(self.descriptor(full_name))
                    self._classes[full_name] = cls
        return cls

    @property
    def net_descriptor(self) -> Descriptor:
        """``caffe.NetParameter``."""
        return self.descriptor(f"{self._package}.NetParameter")

    @property
    def solver_descriptor(self) -> Descriptor:
        """``caffe.SolverParameter``."""
        return self.descriptor(f"{self._package}.SolverParameter")


def default_descriptor_path() -> Path:
    """Path of the committed descriptor set (``rewriter/data/caffe.desc``).

    The package directory is found from this module's dotted name, so the data stays in
    ``rewriter/data`` wherever in the package this module sits."""
    package = Path(__file__).resolve().parents[__name__.count(".") - 1]  # rewriter/
    return package / "data" / "caffe.desc"


@functools.cache
def default_schema() -> Schema:
    """The BVLC Caffe master schema from the committed descriptor set (a cached singleton)."""
    path = default_descriptor_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SchemaError(f"cannot read the bundled Caffe schema {path}: {exc}") from exc
    return Schema(data, package=DEFAULT_PACKAGE, origin="bundled BVLC caffe.proto")


def schema_from_descriptor_set(
    path: str | os.PathLike[str], *, package: str | None = None
) -> Schema:
    """Load a schema from a serialized ``FileDescriptorSet`` file (e.g. ``protoc -o``)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SchemaError(f"cannot read descriptor set {p}: {exc}") from exc
    schema = Schema(data, package=package or DEFAULT_PACKAGE, origin=str(p))
    if package is None:
        schema = _with_detected_package(schema, data, str(p), main_file=None)
    return schema


def _grpc_tools_include() -> str | None:
    """The folder of well-known protos shipped with grpcio-tools (google/protobuf/*.proto)."""
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_proto"
        if candidate.is_dir():
            return str(candidate)
    return None


def compile_descriptor_set(
    proto_path: str | os.PathLike[str],
    *,
    include_paths: Iterable[str | os.PathLike[str]] = (),
) -> bytes:
    """Compile ``proto_path`` with ``grpc_tools.protoc`` into a serialized FileDescriptorSet.

    The file's own folder is the first import root, so it is recorded under its base name
    (``caffe.proto``); imports are included (``--include_imports``); no source info is kept,
    so the output is deterministic for a given protoc.
    """
    proto = Path(proto_path)
    if importlib.util.find_spec("grpc_tools") is None:
        raise SchemaError(f"compiling {proto} needs grpcio-tools; {_PROTO_EXTRA_HINT}")
    if not proto.is_file():
        raise SchemaError(f"proto file not found: {proto}")
    proto = proto.resolve()
    includes = [str(proto.parent)] + [str(Path(p).resolve()) for p in include_paths]
    well_known = _grpc_tools_include()
    if well_known is not None:
        includes.append(well_known)
    with tempfile.TemporaryDirectory(prefix="rewriter-protoc-") as tmp:
        out = Path(tmp) / "schema.desc"
        cmd = [sys.executable, "-m", "grpc_tools.protoc"]
        cmd += [f"--proto_path={inc}" for inc in includes]
        cmd += [f"--descriptor_set_out={out}", "--include_imports", str(proto)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise SchemaError(f"cannot run protoc on {proto}: {exc}") from exc
        messages = "\n".join(
            line for line in (result.stderr + result.stdout).splitlines() if line.strip()
        )
        if result.returncode != 0 or not out.is_file():
            if "No module named grpc_tools" in messages:
                raise SchemaError(f"compiling {proto} needs grpcio-tools; {_PROTO_EXTRA_HINT}")
            raise SchemaError(_protoc_failure(proto, messages, result.returncode))
        return out.read_bytes()


_PROTOC_ERROR = re.compile(r"^(?P<where>[^\s:][^:]*:\d+:\d+): (?P<what>.*)$")


def _protoc_failure(proto: Path, messages: str, status: int) -> str:
    """One line: protoc's first located error and how many more (not 1,600 lines of them)."""
    errors = [m for m in map(_PROTOC_ERROR.match, messages.splitlines()) if m is not None]
    if not errors:
        lines = [ln for ln in messages.splitlines() if not ln.startswith(("WARNING:", "W0", "E0"))]
        detail = lines[0] if lines else f"protoc exited with status {status}"
        return f"{proto}: error: protoc cannot compile it: {detail}"
    first = errors[0]
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    text = (
        f"{first['where']}: error: {first['what'].rstrip('.')}{more}; --proto takes a fork's "
        "caffe.proto that protoc compiles"
    )
    line, col = (int(x) for x in first["where"].rsplit(":", 2)[1:])
    try:
        source = proto.read_bytes().decode("utf-8", "replace").splitlines()[line - 1]
    except (OSError, IndexError):
        return text
    shown = "".join(c if c.isprintable() else "?" for c in source[:200])
    return f"{text}\n  {shown}\n  {' ' * (col - 1)}^"


def _with_detected_package(
    schema: Schema, data: bytes, origin: str, main_file: str | None
) -> Schema:
    """Pick the package that defines NetParameter (the main file's first, then ``caffe``)."""
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    candidates: list[str] = []
    for f in reversed(fds.file):  # the main file comes last with --include_imports
        if main_file is None or f.name == main_file:
            candidates.append(f.package)
    candidates.append(DEFAULT_PACKAGE)
    candidates += [f.package for f in fds.file]
    for package in candidates:
        prefix = f"{package}." if package else ""
        if schema.has_message(f"{prefix}NetParameter"):
            if package == schema.package:
                return schema
            return Schema(data, package=package, origin=origin)
    raise SchemaError(f"{origin} does not define a NetParameter message")


def schema_from_proto(
    path: str | os.PathLike[str],
    *,
    include_paths: Iterable[str | os.PathLike[str]] = (),
) -> Schema:
    """Compile a (fork) ``caffe.proto`` at run time and load it into a private pool.

    Raises :class:`SchemaError` when grpcio-tools is missing or protoc reports errors (its
    messages are included), or when the file defines no ``NetParameter``.
    """
    proto = Path(path)
    data = compile_descriptor_set(proto, include_paths=include_paths)
    origin = str(proto)
    schema = Schema(data, package=DEFAULT_PACKAGE, origin=origin)
    return _with_detected_package(schema, data, origin, main_file=proto.name)


def is_repeated(fd: Any) -> bool:
    """Whether a field descriptor is repeated, on every protobuf we support (``label`` is
    gone from the newest releases; ``is_repeated`` is missing from the oldest)."""
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return bool(getattr(fd, "label", 0) == 3)


def message_from_wire(cls: type[Any], data: bytes) -> Any:
    """The message of class ``cls`` that ``data`` encodes. Merge, unlike Parse, accepts unset
    required fields, as a message parked by ``SerializePartialToString`` may have."""
    msg = cls()
    msg.MergeFromString(data)
    return msg
