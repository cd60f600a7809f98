"""Generate Python code from protos/ into services/genproto/ (run by `make protos`).

grpcio-tools writes absolute imports (`from flywheel.v1 import events_pb2`) that only work
with the output folder on sys.path; we rewrite them to the package path instead of editing
sys.path at run time.  `--check` regenerates into a temporary folder and fails on any
difference, which is how CI catches stale generated code.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "services" / "genproto"
PACKAGE = "services.genproto"
IMPORT_RE = re.compile(r"^from (inference|flywheel\.v1|flywheel) import (\w+_pb2)", re.MULTILINE)


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        fixed = IMPORT_RE.sub(rf"from {PACKAGE}.\1 import \2", text)
        if fixed != text:
            path.write_text(fixed)
    for folder in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if services/genproto is stale")
    args = parser.parse_args()
    if not args.check:
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        stale = _differences(filecmp.dircmp(fresh, OUT))
    if stale:
        print("generated code is stale; run `make protos`:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _differences(cmp: filecmp.dircmp) -> list[str]:
    out = [f"{cmp.right}/{n}" for n in cmp.diff_files + cmp.left_only + cmp.right_only if n != "__pycache__"]
    for sub in cmp.subdirs.values():
        out += _differences(sub)
    return out


if __name__ == "__main__":
    sys.exit(main())
