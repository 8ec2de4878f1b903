"""docs/configuration.md is generated from the gateway's Settings: it must be what the generator renders now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from sarm_gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"
REGENERATE = "make docs  (or: .venv/bin/python docs/generate_configuration.py)"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_configuration", ROOT / "docs" / "generate_configuration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_has_a_description() -> None:
    missing = [f"SARM_{name.upper()}" for name, field in Settings.model_fields.items() if not field.description]
    assert not missing, (
        f"settings without Field(description=...) in service/sarm_gateway/settings.py: {missing}; "
        f"describe them, then run {REGENERATE}"
    )


def test_configuration_page_is_current() -> None:
    expected = _generator().render()
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    assert current == expected, f"docs/configuration.md is stale (Settings changed): run {REGENERATE}"


def test_page_lists_every_setting_with_its_default() -> None:
    page = PAGE.read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `SARM_")}
    assert set(rows) == {f"SARM_{name.upper()}" for name in Settings.model_fields}
    assert "| 50051 |" in rows["SARM_GRPC_PORT"]
    assert "| `.cache/model_repo/default` |" in rows["SARM_MODEL_REPO"]  # relative to the checkout, not this machine
    assert "`local` \\| `triton`" in rows["SARM_BACKEND"]
    assert "| 0.63 |" in rows["SARM_TASK_MATCH_MIN"]


def test_check_mode_reports_a_stale_page(tmp_path: Path, monkeypatch, capsys) -> None:
    generator = _generator()
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(generator, "OUTPUT", stale)
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    assert generator.main(["--check"]) == 1
    assert "make docs" in capsys.readouterr().err
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0
