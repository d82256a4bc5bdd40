"""The README stays true: its quick start is the two commands, its settings table matches the code."""

from __future__ import annotations

import re
from dataclasses import fields

from cli_fixtures import REPO_ROOT

from adapters.settings import _FIELDS, Settings

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
CLI_VARS = {"MDBATCH_HOME", "MDBATCH_API_URL", "MDBATCH_API_KEY", "MDBATCH_CALLER"}
# switches of the `run` script itself (e.g. MDBATCH_SKIP_TORCH_TESTS): read there, not by the app
RUN_VARS = set(re.findall(r"\bMDBATCH_[A-Z0-9_]+\b", (REPO_ROOT / "run").read_text(encoding="utf-8")))


def _setting_vars() -> set[str]:
    return {_FIELDS.get(f.name, "MDBATCH_" + f.name.upper()) for f in fields(Settings)}


def test_quick_start_is_two_commands_that_exist() -> None:
    section = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.strip() for ln in section.strip().splitlines()]
    assert commands == ["./run detect ../shared/testdata/camera-traps --model demo", "./run test"]
    assert (REPO_ROOT / "run").exists()
    assert (REPO_ROOT.parent / "shared" / "testdata" / "camera-traps").is_dir()


def test_every_setting_is_documented() -> None:
    table = README.split("## Settings reference", 1)[1].split("\n## ", 1)[0]
    missing = sorted(v for v in _setting_vars() if f"`{v}`" not in table)
    assert missing == [], f"settings missing from the README's table: {missing}"


def test_readme_names_no_setting_that_does_not_exist() -> None:
    named = set(re.findall(r"\bMDBATCH_[A-Z0-9_]+\b", README))
    unknown = sorted(named - _setting_vars() - CLI_VARS - RUN_VARS)
    assert unknown == [], f"the README names settings the code does not read: {unknown}"
