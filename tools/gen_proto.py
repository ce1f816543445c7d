"""Regenerate tbwriter/proto/*_pb2.py from proto/*.proto: `python tools/gen_proto.py`.

`--check` regenerates into a temporary folder and exits 1 when the committed modules differ.
The .proto files live in proto/ but are compiled as tbwriter/proto/*.proto, so that the
generated modules import each other as `tbwriter.proto.x_pb2` and register names that never
clash with TensorBoard's or tensorboardX's own copies in protobuf's default pool.
"""

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "proto"
DEST = ROOT / "tbwriter" / "proto"


def generate(out: Path) -> list[Path]:
    """Compile every proto/*.proto into out/ and return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp, "in", "tbwriter", "proto")
        staged.mkdir(parents=True)
        for p in sorted(SRC.glob("*.proto")):
            shutil.copy(p, staged / p.name)
        built = Path(tmp, "out")
        built.mkdir()
        include = Path(grpc_tools.__file__).parent / "_proto"
        args = ["protoc", f"-I{Path(tmp, 'in')}", f"-I{include}", f"--python_out={built}"]
        args += [f"tbwriter/proto/{p.name}" for p in sorted(staged.glob("*.proto"))]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {SRC}")
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for f in sorted(Path(built, "tbwriter", "proto").glob("*_pb2.py")):
            shutil.copy(f, out / f.name)
            files.append(out / f.name)
        return files


def main() -> int:
    """Regenerate, or with --check compare against the committed modules."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed modules are stale")
    args = parser.parse_args()
    if not args.check:
        for f in generate(DEST):
            print(f.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(DEST.glob("*_pb2.py"))
        stale = [
            f.name for f in fresh if not (DEST / f.name).exists() or not filecmp.cmp(f, DEST / f.name, shallow=False)
        ]
        extra = sorted({f.name for f in committed} - {f.name for f in fresh})
        if stale or extra:
            print(
                f"stale generated modules in {DEST.relative_to(ROOT)}: {stale + extra}; run python tools/gen_proto.py"
            )
            return 1
    print("generated modules are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
