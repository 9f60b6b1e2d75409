"""The README's quickstart commands and .ci/run stay in sync."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    test_cmd = blocks[1].strip()
    assert "pytest" in test_cmd and "scorealign demo" in blocks[0]
    assert test_cmd in (ROOT / ".ci" / "run").read_text().splitlines()
