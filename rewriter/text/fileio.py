"""Reading and writing files without losing a byte, and without half-written results.

Files are decoded as UTF-8 with ``surrogateescape`` so that stray non-UTF-8 bytes (old comments in
Latin-1, say) survive a round trip unchanged. Writes go to a temporary file in the target's own
directory and are renamed over it, so a crash leaves either the old file or the new one; the
file mode is kept and a symlink keeps pointing at its (rewritten) target.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from rewriter.errors import RewriterError

__all__ = ["read_text", "write_bytes_atomic", "write_text_atomic", "FileError"]


class FileError(RewriterError):
    """A file could not be read or written; the message names the file and the reason."""


_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def looks_binary(data: bytes) -> bool:
    """More than a tenth of the first 8 KB (and at least 3 bytes) neither UTF-8 nor printable.

    Stray Latin-1 bytes in comments and a NUL inside a string (protobuf reads both) stay text;
    a .caffemodel, an image or an archive does not.
    """
    text = data[:8192].decode("utf-8", "surrogateescape")
    odd = sum(1 for c in text if "\udc80" <= c <= "\udcff" or (c < " " and c not in _TEXT_CONTROLS))
    return odd >= 3 and odd * 10 > len(text)


#: byte order marks of the wide Unicode encodings (UTF-32 first: its LE mark starts like UTF-16's)
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)


def read_text(path: str | os.PathLike[str], binary_ok: bool = False) -> str:
    """The file's text; a binary file is refused (its bytes would make a nonsense error)."""
    p = Path(path)
    try:
        if p.is_dir():
            raise FileError(f"{p}: is a directory (expected a prototxt file)")
        if p.is_char_device() or p.is_block_device():
            # /dev/zero or a disk would be read until memory runs out; pipes are fine.
            raise FileError(f"{p}: is a device, not a file")
        data = p.read_bytes()
    except FileError:
        raise
    except OSError as e:
        raise FileError(f"{p}: cannot read: {e.strerror or e}") from None
    for bom, encoding in _WIDE_BOMS:
        if not binary_ok and data.startswith(bom):
            # Text, but not in the encoding Caffe's parser reads: say so instead of "binary".
            first = data[len(bom) : 400].decode(encoding, "replace").split("\n", 1)[0]
            first = "".join(c if c.isprintable() else "?" for c in first[:100])
            raise FileError(
                f"{p}:1:1: the file is {encoding} text; Caffe reads prototxt files as UTF-8\n"
                f"  {first}\n  ^\n"
                f"  help: convert it: iconv -f {encoding} -t UTF-8 {p} > {p}.utf8"
            )
    if not binary_ok and looks_binary(data):
        raise FileError(
            f"{p}: not a text file ({len(data):,} bytes of binary data); a prototxt is text "
            "(a .caffemodel goes to 'rewriter weights NET MODEL' or 'rewriter upgrade')"
        )
    return data.decode("utf-8", "surrogateescape")


def _why_not(directory: Path, e: OSError) -> str:
    """The real reason a file cannot be created in ``directory`` (not just ENOENT)."""
    missing = directory
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    if not directory.exists():
        return f"the directory {missing} does not exist (create it first)"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK):
        return f"the directory {directory} is not writable ({e.strerror or e})"
    return str(e.strerror or e)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (surrogate-escaped bytes restored) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8", "surrogateescape"))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    try:
        st = os.stat(path)  # follows symlinks
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise FileError(f"{path}: is a directory (expected a file to write)")
    if st is not None and not stat.S_ISREG(st.st_mode):
        # /dev/null, /dev/stdout, a pipe: write into it. Renaming a temporary file over it
        # would replace the device node itself (as root, /dev/null would become a file).
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except OSError as e:
            raise FileError(f"{path}: cannot write: {e.strerror or e}") from None
        return
    target = Path(os.path.realpath(path))
    directory = target.parent
    mode = stat.S_IMODE(st.st_mode) if st is not None else None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise FileError(f"{path}: cannot write: {_why_not(directory, e)}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is None:
            # mkstemp creates 0600; a new file gets the usual permissions instead.
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FileError(f"{path}: cannot write: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
