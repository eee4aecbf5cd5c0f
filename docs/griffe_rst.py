"""A griffe extension (mkdocs.yml): the library's docstrings are plain text with a few reStructuredText
habits; this makes them read right as Markdown in the API pages.

- ``:func:`name``` / ``:class:``, ``:meth:``, ``:mod:``, ``:attr:`` roles become code spans;
- ````double backticks```` become single ones;
- a ``*`` between two non-spaces (``delta*A``, ``9*B*L*D*N``) is escaped, not read as emphasis;
- ``text::`` before a literal block loses one colon (the block is indented, so Markdown shows it as code).
"""
from __future__ import annotations

import re

from griffe import Extension

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_DOUBLE = re.compile(r"``([^`]+)``")
_STAR = re.compile(r"(?<=[^\s*\\])\*(?=[^\s*])")


def markdownify(text: str) -> str:
    """A docstring's reStructuredText habits as Markdown; code (spans, indented blocks) is left alone."""
    lines = []
    for line in text.splitlines():
        if line.startswith("    ") or not line.strip():  # an indented (literal) block
            lines.append(line)
            continue
        line = _ROLE.sub(r"`\1`", line)
        line = _DOUBLE.sub(r"`\1`", line)
        if line.endswith("::"):  # "as follows::" introduces a literal block
            line = line[:-1]
        parts = re.split(r"(`[^`]*`)", line)  # escape stars outside code spans only
        lines.append("".join(p if p.startswith("`") else _STAR.sub(r"\\*", p) for p in parts))
    return "\n".join(lines)


class MarkdownDocstrings(Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdownify(obj.docstring.value)
