"""The README's quick start runs, and prints what the README says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python block under 'Quick start'"
    return match.group(1)


def test_quick_start_runs_as_documented(tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start())
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=README.parent)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "released, because card declined"
    assert lines[1] == "failed card declined"
    assert lines[2].startswith("['work.created', 'work.started'")
    assert "'work.failed'" in lines[2]


def test_readme_commands_name_real_files() -> None:
    text = README.read_text()
    assert "bash scripts/test.sh" in text
    assert (README.parent / "scripts" / "test.sh").exists()
    assert "stepsaga run demo" in text
