"""Replace a generated block of a Markdown file (README tables come from commands, not hands)."""

from __future__ import annotations

from pathlib import Path


def update_section(path: str | Path, name: str, content: str) -> None:
    """Put ``content`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} … {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{content.strip()}\n{end}{tail}")
