"""Generate the Python code of proto/sarm/v1/sarm.proto into every package that ships it (`make proto`).

protoc is run from proto/ so the descriptor keeps its canonical name "sarm/v1/sarm.proto" in every copy (two
copies in one process then register the same file instead of clashing). The generated `*_pb2_grpc.py`
imports its sibling as `sarm.v1`, which would be our core package: it is rewritten to a relative import.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
PROTO = "sarm/v1/sarm.proto"
# Where each package keeps its copy, relative to the repository root: the gateway, and the thin client (which
# must not depend on the gateway, so it ships its own).
TARGETS = ("service/sarm_gateway/v1", "clients/sarm_client/v1")
GENERATED = ("sarm_pb2.py", "sarm_pb2.pyi", "sarm_pb2_grpc.py")
ABSOLUTE_IMPORT = "from sarm.v1 import sarm_pb2 as"
RELATIVE_IMPORT = "from . import sarm_pb2 as"


def generate(root: Path = ROOT) -> list[Path]:
    """Write the generated files under `root` (the repository, or a temp dir to compare against)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        if protoc.main([*args, str(PROTO_DIR / PROTO)]) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        grpc_module = Path(tmp, "sarm/v1/sarm_pb2_grpc.py")
        text = grpc_module.read_text()
        if ABSOLUTE_IMPORT not in text:
            raise RuntimeError(f"{grpc_module.name} no longer imports {ABSOLUTE_IMPORT!r}: update generate.py")
        grpc_module.write_text(text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT))
        written = []
        for target in TARGETS:
            out = root / target
            out.mkdir(parents=True, exist_ok=True)
            init = out / "__init__.py"
            init.write_text('"""Generated from proto/sarm/v1/sarm.proto by `make proto`."""\n')
            written.append(init)
            for name in GENERATED:
                written.append(Path(shutil.copyfile(Path(tmp, "sarm/v1", name), out / name)))
        return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT, help="write under this directory instead of the repo")
    for path in generate(parser.parse_args().root):
        print(path)
