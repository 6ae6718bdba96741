"""A griffe extension (mkdocs.yml, the python handler's ``extensions``): the package's docstrings
use Sphinx roles (``:class:`~streamtasks.Registry```), which Markdown would show as they are;
each becomes a code span of its target (the last part, for a ``~`` target), as Sphinx shows it."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):`(?P<tilde>~?)(?P<target>[^`]+)`")


def _code(match: re.Match[str]) -> str:
    target = match.group("target")
    return f"`{target.rsplit('.', 1)[-1] if match.group('tilde') else target}`"


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
