"""The README's headline table is generated from the committed demo report's main.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_table_is_generated_from_main_md(tmp_path):
    spec = importlib.util.spec_from_file_location("readme_table", REPO / "scripts" / "readme_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "README.md's main table is stale: run scripts/readme_table.py"
    # the check can fail: a hand edit of the block is caught
    readme = tmp_path / "README.md"
    text = (REPO / "README.md").read_text(encoding="utf-8")
    i, _ = mod.block(text)
    readme.write_text(text[:i] + "\n| hand | edited |\n" + text[i:], encoding="utf-8")
    assert mod.main(["--check", "--readme", str(readme)]) == 1
