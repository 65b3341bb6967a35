"""Every specification citation in the repository resolves to a section of docs/spec/.

The one citation form is ``spec/formats.md §4.2`` / ``spec/model.md §3`` (lists ``§2.2, §3.3`` and ranges
``§3.4–3.6`` allowed after one file name). A ``§`` anywhere outside docs/spec/ that is not part of such a
citation is an error, and so is a cited number without a heading ``## N.`` / ``### N.M`` in the spec file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = ROOT / "docs" / "spec"
SPECS = ("formats.md", "model.md")
#: Tracked paths whose text may cite the specs (docs/spec itself is the target, not a citer).
CITING_ROOTS = (
    "src",
    "workflow",
    "tools",
    "tests",
    "benchmarks",
    "docs",
    "README.md",
    "Snakefile",
    "config.yaml",
)

_SEC = r"\d+(?:\.\d+)*"
_ITEM = rf"§(?P<a>{_SEC})(?:\s?[-–]\s?(?P<b>{_SEC}))?"
_ITEM_RE = re.compile(_ITEM.replace("?P<a>", "").replace("?P<b>", ""))
CITATION = re.compile(
    rf"spec/(?P<file>{'|'.join(re.escape(s) for s in SPECS)}) "
    rf"(?P<items>{_ITEM_RE.pattern}(?:(?:, | and | or ){_ITEM_RE.pattern})*)"
)
_HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)[.)]?\s")


def section_numbers(markdown: str) -> set[str]:
    """Section numbers of a markdown file's numbered headings (``## 3. X`` → ``"3"``, ``### 2.5 Y`` → ``"2.5"``).

    Lines inside fenced code blocks are not headings.
    """
    numbers: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            numbers.add(m.group(1))
    return numbers


def citations(text: str) -> tuple[list[tuple[int, str, str]], list[int]]:
    """Citations and stray section signs of one text.

    Returns:
        ``([(line, spec file name, section number), ...], [line of each § outside a citation, ...])``;
        a range ``§a–b`` yields both ends, lines are 1-based.
    """
    found: list[tuple[int, str, str]] = []
    covered: set[int] = set()
    for m in CITATION.finditer(text):
        covered.update(range(m.start(), m.end()))
        line = text.count("\n", 0, m.start()) + 1
        for item in re.finditer(_ITEM, m.group("items")):
            found += [(line, m.group("file"), n) for n in (item.group("a"), item.group("b")) if n]
    stray = [text.count("\n", 0, i) + 1 for i, c in enumerate(text) if c == "§" and i not in covered]
    return found, stray


def _citing_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", *CITING_ROOTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # docs/spec/ is what is cited; this module spells out the citation form itself.
    files = [ROOT / f for f in out if not f.startswith("docs/spec/") and f != "tests/test_docs.py"]
    return [f for f in files if f.is_file() and f.suffix not in {".png", ".jpg", ".jpeg", ".gz", ".tar"}]


@pytest.mark.parametrize("name", SPECS)
def test_spec_file_states_its_origin_and_has_numbered_sections(name):
    text = (SPEC_DIR / name).read_text(encoding="utf-8")
    header = text.split("\n\n", 2)[1]
    assert header.startswith("> ") and "mvhand" in header and "> Origin:" in header, (
        f"docs/spec/{name}: the header must state its origin"
    )
    assert {"1", "2", "3"} <= section_numbers(text)


def test_section_numbers_parse_headings_not_code():
    md = "# Title\n## 1. One\n### 1.2 Sub\n```\n## 9. in code\n```\n## 7) Paren\n#### not numbered\n"
    assert section_numbers(md) == {"1", "1.2", "7"}


def test_citation_parser_known_answers():
    text = "a (spec/formats.md §2.2, §3.4–3.6) b\nc spec/model.md §7 d §5\n"
    found, stray = citations(text)
    assert found == [
        (1, "formats.md", "2.2"),
        (1, "formats.md", "3.4"),
        (1, "formats.md", "3.6"),
        (2, "model.md", "7"),
    ]
    assert stray == [2]


def test_every_citation_resolves_to_a_spec_section():
    sections = {name: section_numbers((SPEC_DIR / name).read_text(encoding="utf-8")) for name in SPECS}
    problems, n = [], 0
    for path in _citing_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found, stray = citations(text)
        rel = path.relative_to(ROOT)
        n += len(found)
        problems += [
            f"{rel}:{line}: spec/{name} §{num} has no heading '{num}' in docs/spec/{name}"
            for line, name, num in found
            if num not in sections[name]
        ]
        problems += [
            f"{rel}:{line}: bare '§'; cite as 'spec/formats.md §N.M' or 'spec/model.md §N.M'"
            for line in stray
        ]
    assert not problems, "\n".join(problems)
    assert n > 100  # the scan really reads the repository
