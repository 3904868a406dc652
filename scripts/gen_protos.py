#!/usr/bin/env python3
"""Generate the gRPC modules of the protos trees from their ``.proto`` files.

Two trees: ``me2_scheduler/protos/`` (the service's contracts, in its wheel)
and ``devkit/me2_devkit/protos/`` (the simulators' Control service, the dev
kit's). ``grpc_tools.protoc`` writes ``*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` next to the protos; the ``import x_pb2`` lines of the
``_grpc`` modules are then made package-absolute so the modules import as
``me2_scheduler.protos`` (or ``me2_devkit.protos``).

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

ROOT = Path(__file__).resolve().parent.parent
# Each protos directory and the package its modules import as.
TREES = {
    ROOT / "me2_scheduler" / "protos": "me2_scheduler.protos",
    ROOT / "devkit" / "me2_devkit" / "protos": "me2_devkit.protos",
}
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_BARE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def proto_files(proto_dir: Path) -> list[Path]:
    """The ``.proto`` files of ``proto_dir`` to compile, sorted by name."""
    return sorted(proto_dir.glob("*.proto"))


def generated_names(protos: list[Path]) -> list[str]:
    """The file names ``protoc`` produces for ``protos``."""
    return [p.stem + suffix for p in protos for suffix in GENERATED_SUFFIXES]


def generate(proto_dir: Path, package: str, out_dir: Path) -> None:
    """Run protoc over the protos of ``proto_dir`` into ``out_dir``, their ``_grpc`` modules
    importing through ``package``; raise SystemExit if protoc fails."""
    from grpc_tools import protoc  # a dev dependency: only this script needs it

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(p.name for p in proto_files(proto_dir)),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.glob("*_pb2_grpc.py"):
        path.write_text(make_imports_absolute(path.read_text(), package))


def make_imports_absolute(source: str, package: str) -> str:
    """Rewrite ``import x_pb2 as y`` into ``from <package> import x_pb2 as y``."""
    return _BARE_IMPORT.sub(rf"from {package} import \1 as \2", source)


def stale_files(proto_dir: Path, package: str) -> list[str]:
    """Names of the committed generated files of ``proto_dir`` that differ from a fresh
    generation."""
    with tempfile.TemporaryDirectory(prefix="me2-protos-") as tmp:
        generate(proto_dir, package, Path(tmp))
        stale = []
        for name in generated_names(proto_files(proto_dir)):
            fresh, committed = Path(tmp) / name, proto_dir / name
            if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                stale.append(name)
        return stale


def main(argv: list[str] | None = None) -> int:
    """Regenerate, or with ``--check`` report stale modules; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if args.check:
        stale = [
            proto_dir.relative_to(ROOT) / name
            for proto_dir, package in TREES.items()
            for name in stale_files(proto_dir, package)
        ]
        for path in stale:
            print(f"stale: {path}")
        if stale:
            print("run `make gen-rpc` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for proto_dir, package in TREES.items():
        generate(proto_dir, package, proto_dir)
        print(f"generated {len(generated_names(proto_files(proto_dir)))} files in {proto_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
