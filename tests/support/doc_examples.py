"""The code examples of a documentation page, as files: a fenced ``python`` block whose first
line is ``# <name>.py`` is the file ``<name>.py`` (blocks of one name are joined in order).

Used by the tests that run an example verbatim (``tests/unit/project/test_testing_example.py``): they
name the page and the section heading, so a section that moves to another page is found by
changing those two arguments.
"""

from __future__ import annotations

import re
from pathlib import Path

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
FENCE = re.compile(r"^```python\s*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
FILE_LINE = re.compile(r"#\s*([\w./-]+\.py)\b")  # "# app.py", "# app.py  (a note)"


def section(path: Path, heading: str) -> str:
    """The text of ``path`` under the heading ``heading`` (any level, without the ``#``s), up
    to the next heading of the same or a higher level. Fences are skipped when looking for
    headings (a ``# comment`` in a code block is not one)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out: list[str] = []
    level = 0
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced or line.startswith("```") else HEADING.match(line)
        if level and match and len(match.group(1)) <= level:
            break
        if level:
            out.append(line)
        elif match and match.group(2) == heading:
            level = len(match.group(1))
    if not level:
        raise LookupError(f"no heading {heading!r} in {path}")
    return "".join(out)


def example_files(path: Path, heading: str) -> dict[str, str]:
    """The files the section ``heading`` of ``path`` shows: ``{"app.py": source, ...}``."""
    files: dict[str, str] = {}
    for block in FENCE.findall(section(path, heading)):
        named = FILE_LINE.match(block.lstrip())
        if named:
            files[named.group(1)] = files.get(named.group(1), "") + block
    if not files:
        raise LookupError(f"no '# <name>.py' code block under {heading!r} in {path}")
    return files
