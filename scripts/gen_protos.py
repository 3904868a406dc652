#!/usr/bin/env python3
"""Generate the gRPC modules of ``me2_scheduler/protos/`` from its ``.proto`` files.

``grpc_tools.protoc`` writes ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py``
next to the protos; the ``import x_pb2`` lines of the ``_grpc`` modules are
then made package-absolute so the modules import as ``me2_scheduler.protos``.

Usage: ``scripts/gen_protos.py`` (regenerate in place) or
``scripts/gen_protos.py --check`` (exit 1 and name the stale files when the
committed modules differ from what the protos generate).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent.parent / "me2_scheduler" / "protos"
PACKAGE = "me2_scheduler.protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_BARE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def proto_files() -> list[Path]:
    """The ``.proto`` files to compile, sorted by name."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generated_names(protos: list[Path]) -> list[str]:
    """The file names ``protoc`` produces for ``protos``."""
    return [p.stem + suffix for p in protos for suffix in GENERATED_SUFFIXES]


def generate(out_dir: Path) -> None:
    """Run protoc over every proto into ``out_dir``; raise SystemExit if protoc fails."""
    from grpc_tools import protoc  # a dev dependency: only this script needs it

    protos = proto_files()
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(p.name for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.glob("*_pb2_grpc.py"):
        path.write_text(make_imports_absolute(path.read_text()))


def make_imports_absolute(source: str) -> str:
    """Rewrite ``import x_pb2 as y`` into ``from me2_scheduler.protos import x_pb2 as y``."""
    return _BARE_IMPORT.sub(rf"from {PACKAGE} import \1 as \2", source)


def stale_files() -> list[str]:
    """Names of committed generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory(prefix="me2-protos-") as tmp:
        generate(Path(tmp))
        stale = []
        for name in generated_names(proto_files()):
            fresh, committed = Path(tmp) / name, PROTO_DIR / name
            if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                stale.append(name)
        return stale


def main(argv: list[str] | None = None) -> int:
    """Regenerate, or with ``--check`` report stale modules; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: me2_scheduler/protos/{name}")
        if stale:
            print("run `make gen-rpc` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    generate(PROTO_DIR)
    print(f"generated {len(generated_names(proto_files()))} files in {PROTO_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
