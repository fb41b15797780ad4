"""Regenerate rewriter/data/caffe.desc from proto/caffe.proto.

Usage (from anywhere):

    python tools/regen_descriptor.py          # rewrite the committed descriptor set
    python tools/regen_descriptor.py --check  # exit 1 if it is out of date

Needs grpcio-tools (``pip install prototxt-rewriter[proto]``). The output is a serialized
``FileDescriptorSet`` compiled with ``python -m grpc_tools.protoc --include_imports``, without
source info, so it is byte-for-byte reproducible for a given protoc.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "proto" / "caffe.proto"
DESC = REPO / "rewriter" / "data" / "caffe.desc"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check, do not write")
    parser.add_argument("--proto", type=Path, default=PROTO, help="source .proto")
    parser.add_argument("--out", type=Path, default=DESC, help="descriptor set to write")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from rewriter.schema.runtime import SchemaError, compile_descriptor_set

    try:
        data = compile_descriptor_set(args.proto)
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    current = args.out.read_bytes() if args.out.is_file() else None
    if args.check:
        if current == data:
            print(f"{args.out} is up to date ({len(data)} bytes)")
            return 0
        print(f"{args.out} is out of date; run tools/regen_descriptor.py", file=sys.stderr)
        return 1
    if current == data:
        print(f"{args.out} unchanged ({len(data)} bytes)")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
