"""The fenced blocks of the docs site (``docs/**/*.md``) and the README, and what the test
suite does with each (``tests/integration/test_docs_examples.py`` runs them).

A block is run unless the line just above it (blank lines aside) is a marker comment saying
otherwise. The rules, by kind:

- ``python`` whose first line names a file (``# app.py``): written to that file in the page's
  directory and imported, so the page's later blocks (and a worker started there) use it.
  Any other block whose first line names a file (``# pytest.ini``): written, not run.
- ``python``: executed, top-level ``await`` allowed, in one namespace per page (a page reads
  top to bottom, so a later block uses what an earlier one defined).
- ``bash``: run by bash in the page's directory; it must exit 0.
- ``<!-- example: background -->`` over a ``bash`` block: started, left running (a worker),
  stopped with SIGTERM at the end of the page; it must then exit 0 (a graceful stop).
- ``<!-- example: output -->`` over a block: what a reader sees: each of its lines must show
  up in the output of the page's run blocks (background ones included) within a time limit.
- ``<!-- example: run by PATH (...) -->``: another test runs it; PATH must exist and name
  this page.
- ``<!-- example: skip (REASON) -->``: not run, and the reason says why.

Any other block (a language that is not run, with no marker) is an error: every block on the
site is either run or marked, with its reason, in the Markdown.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from attrs import frozen

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: ``<!-- example: KIND (detail) -->`` or ``<!-- example: run by PATH (detail) -->``.
MARKER = re.compile(r"^<!--\s*example:\s*(?P<kind>skip|background|output|run by)\b\s*(?P<rest>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
FILE_LINE = re.compile(r"^#\s*(?P<name>[\w.-]+\.(?:py|ini|toml|cfg|txt|json|yaml))\s*$")
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell"}
#: Kinds a test runs (here or in another test file).
RUN_KINDS = {"python", "file", "bash", "background", "output", "elsewhere"}


class DocsExampleError(AssertionError):
    """A block the rules above do not cover, or a marker that says too little."""


@frozen
class Block:
    """One fenced block: where it is, its language, its code (de-indented) and its kind."""

    page: Path
    line: int
    lang: str
    code: str
    kind: str
    detail: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        match = FILE_LINE.match(self.code.split("\n", 1)[0])
        return match.group("name") if match else None


def pages() -> list[Path]:
    """The README and every page of the site."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, each with its kind (raises on an unmarked one that no
    rule runs, and on a marker without its reason)."""
    return list(_blocks(page, page.read_text(encoding="utf-8").split("\n")))


def _blocks(page: Path, lines: list[str]) -> Iterator[Block]:
    marker: re.Match[str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence is None:
            if line.strip():
                marker = MARKER.match(line.strip())
            index += 1
            continue
        end = _closing(lines, index, fence.group("fence"))
        indent = len(fence.group("indent"))
        code = "\n".join(text[indent:] for text in lines[index + 1 : end]) + "\n"
        yield _classify(page, index + 1, fence.group("lang").lower(), code, marker)
        marker = None
        index = end + 1


def _closing(lines: list[str], start: int, fence: str) -> int:
    for index in range(start + 1, len(lines)):
        if lines[index].strip() == fence:
            return index
    raise DocsExampleError(f"unclosed code block at line {start + 1}")


def _classify(page: Path, line: int, lang: str, code: str, marker: re.Match[str] | None) -> Block:
    where = f"{page.relative_to(ROOT)}:{line}"
    if marker is not None:
        kind, rest = marker.group("kind"), marker.group("rest")
        if kind == "skip":
            if not re.fullmatch(r"\(.+\)", rest):
                raise DocsExampleError(f"{where}: 'example: skip' needs its reason in parentheses")
            return Block(page, line, lang, code, "skip", rest[1:-1])
        if kind == "run by":
            path = rest.split(" ", 1)[0]
            return Block(page, line, lang, code, "elsewhere", path)
        if kind == "background" and lang not in SHELL:
            raise DocsExampleError(f"{where}: only a shell block runs in the background")
        return Block(page, line, lang, code, kind)
    first = code.split("\n", 1)[0]
    if FILE_LINE.match(first):
        return Block(page, line, lang, code, "file")
    if lang in PYTHON:
        return Block(page, line, lang, code, "python")
    if lang in SHELL:
        return Block(page, line, lang, code, "bash")
    raise DocsExampleError(
        f"{where}: a ```{lang or '(no language)'} block is not run: run it (python, bash) or mark it "
        "'<!-- example: skip (why) -->' on the line above"
    )


def census() -> Counter[str]:
    """How many blocks of each kind the README and the site have."""
    return Counter(block.kind for page in pages() for block in blocks(page))
