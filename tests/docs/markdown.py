"""What README.md and docs/*.md show, as data: fenced blocks, inline code, links, headings, tables."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"

    @property
    def header(self) -> str:
        """The block's first line when it is a comment (`# ...`), else ''."""
        first = self.text.splitlines()[0] if self.text.strip() else ""
        return first[1:].strip() if first.startswith("#") else ""


def blocks(doc: Path) -> list[Block]:
    out: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, body = i, m["indent"], []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{doc}:{start + 1}: a fenced block that is never closed"
        text = textwrap.dedent("\n".join(body)) if indent else "\n".join(body)
        out.append(Block(doc, start + 1, m["lang"], text + "\n"))
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc)]


def inline_code(doc: Path) -> list[tuple[int, str]]:
    """(line, text) of every `inline code` span outside fenced blocks."""
    out = []
    for n, line in enumerate(prose_lines(doc), 1):
        out.extend((n, m.group(1)) for m in re.finditer(r"`([^`]+)`", line))
    return out


def prose_lines(doc: Path) -> list[str]:
    """The document's lines, with the lines of fenced blocks blanked (line numbers stay true)."""
    out, inside = [], False
    for line in doc.read_text().splitlines():
        if not inside and _FENCE.match(line):
            inside = True
            out.append("")
        elif inside and line.strip() == "```":
            inside = False
            out.append("")
        else:
            out.append("" if inside else line)
    return out


def links(doc: Path) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(prose_lines(doc), 1):
        out.extend((n, m.group(1)) for m in re.finditer(r"\]\(([^)\s]+)\)", line))
    return out


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the headings of a document."""
    out: set[str] = set()
    for line in prose_lines(doc):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            base, k = slug, 1
            while slug in out:
                slug, k = f"{base}-{k}", k + 1
            out.add(slug)
    return out


def table_after(doc: Path, heading: str) -> list[list[str]]:
    """The rows (cells as text) of the first table under a heading that starts with `heading`."""
    lines = prose_lines(doc)
    start = next(i for i, line in enumerate(lines) if re.match(rf"^#+\s+{re.escape(heading)}", line))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header row
