"""Every relative link in the repository's Markdown files resolves: the file or directory exists,
and a `#anchor` names a heading of the target Markdown file (GitHub's heading slugs).

Links inside fenced code blocks and inline code are not links. URLs with a scheme (https:,
mailto:...) are not checked. Headings are ATX headings (`## Title`); an `<a id="...">` or
`<a name="...">` also counts as an anchor.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "node_modules"}

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"(`+).+?\1")
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
HTML_LINK = re.compile(r"\b(?:href|src)=\"([^\"]+)\"")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|//)")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """The Markdown files git tracks (plus new ones it does not ignore); every *.md without git."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.md"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in root.rglob("*.md") if not SKIPPED_DIRS & set(p.relative_to(root).parts))
    return sorted({root / name for name in out.decode().split("\0") if name and (root / name).is_file()})


def _prose(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks (a line in one becomes empty)."""
    lines, fence = [], ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
            lines.append("")
        elif match:
            fence = match.group(1)
            lines.append("")
        else:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: link text kept, markup and punctuation dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file has: heading slugs (repeats get -1, -2...) and HTML anchors."""
    found: set[str] = set()
    seen: Counter[str] = Counter()
    for line in _prose(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        if match := HEADING.match(line):
            base = slug(match.group(1))
            found.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in a Markdown file, code excluded."""
    out = []
    for number, line in enumerate(_prose(path.read_text(encoding="utf-8")), start=1):
        line = CODE_SPAN.sub("", line)
        targets = INLINE_LINK.findall(line) + HTML_LINK.findall(line)
        if match := REFERENCE_DEFINITION.match(line):
            targets.append(match.group(1))
        out += [(number, target) for target in targets if target]
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: target (why)`` for every relative link of ``path`` that does not resolve."""
    broken = []
    for number, target in links(path):
        if SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part)
        if not file_part:
            resolved = path
        elif file_part.startswith("/"):
            resolved = root / file_part.lstrip("/")
        else:
            resolved = path.parent / file_part
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            broken.append(f"{where} (no heading #{anchor} in {file_part or path.name})")
    return broken


def test_the_markdown_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/operations.md", "bench/README.md", "tests/README.md"} <= names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path: Path) -> None:
    broken = broken_links(path)
    assert not broken, "\n".join(["broken links:", *broken])


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Edge settings\n\n## Edge settings\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Development (`make dev`)\n\n"
        "[ok](docs/other.md#edge-settings) [ok, repeated](docs/other.md#edge-settings-1) "
        "[ok, here](#development-make-dev) [ok, dir](docs/) ![ok](/docs/other.md) [web](https://example.com/x.md)\n"
        "[missing file](docs/gone.md)\n"
        "[missing anchor](docs/other.md#benchmark)\n"
        "[missing here](#page-2)\n"
        "`[code span](nowhere.md)`\n\n"
        "```\n[fenced](nowhere.md)\n```\n\n"
        "[ref]: ../outside-missing.md\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "page.md:6: docs/gone.md (no such file)",
        "page.md:7: docs/other.md#benchmark (no heading #benchmark in docs/other.md)",
        "page.md:8: #page-2 (no heading #page-2 in page.md)",
        "page.md:15: ../outside-missing.md (no such file)",
    ]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("The edge (nginx)", "the-edge-nginx"),
        ("Development (`make dev`)", "development-make-dev"),
        ("5. Rotate keys and passwords", "5-rotate-keys-and-passwords"),
        ("Why the request path looks the way it does", "why-the-request-path-looks-the-way-it-does"),
        ("See [Benchmark](bench/README.md): x_y", "see-benchmark-x_y"),
    ],
)
def test_heading_slugs_follow_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected
