"""The Markdown documents' relative links lead to files and headings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    p for p in [ROOT / "README.md", *ROOT.glob("*/README.md"), *ROOT.glob("docs/*.md")]
    if p.is_file()
)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _text_outside_code(path: Path) -> list[str]:
    """The document's lines, those of fenced code blocks blanked (a ``# comment`` is no heading)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = line.lstrip().startswith("```")
        fenced = fenced != fence
        lines.append("" if fenced or fence else line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a document, repeated headings numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for line in _text_outside_code(path):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slug_follows_github_rules() -> None:
    simulator = "Rig simulator (`src/iphd/sim/`, `iphd-sim`)"
    assert slug(simulator) == "rig-simulator-srciphdsim-iphd-sim"
    assert slug("On a GPU (NVIDIA H200)") == "on-a-gpu-nvidia-h200"
    assert slug("Ground truth for your own bags (`iphd-eval export-mot`, `import-mot`)") == (
        "ground-truth-for-your-own-bags-iphd-eval-export-mot-import-mot"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    problems = []
    text = "\n".join(_text_outside_code(document))
    for match in _LINK.finditer(text):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        number = text.count("\n", 0, match.start()) + 1
        name, _, anchor = target.partition("#")
        linked = (document.parent / name).resolve() if name else document
        if not linked.exists():
            problems.append(f"line {number}: {target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"line {number}: {target}: no heading #{anchor} in {linked.name}")
    assert not problems, "broken links in " + document.name + ":\n" + "\n".join(problems)
