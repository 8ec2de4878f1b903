"""The generated gRPC code is what `make proto` would write now, in every package that ships a copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The gateway's copy and the thin client's (which must not import the gateway's).
COPIES = ("service/sarm_gateway/v1", "clients/sarm_client/v1")


def test_generated_code_is_current(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fresh = generate.generate(tmp_path)
    written = {str(path.parent.relative_to(tmp_path)) for path in fresh}
    assert written == set(COPIES), f"generate.py writes {sorted(written)}, expected {COPIES}"
    for path in fresh:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.is_file(), f"{committed} is missing: run `make proto`"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `make proto` and commit it"
