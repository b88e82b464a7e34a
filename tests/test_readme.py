"""The README's Python examples run as written."""

from __future__ import annotations

import re

from conftest import REPO


def test_the_readme_python_blocks_run():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
