"""Every relative link in the README, docs/*.md and bench/README.md points at a file that exists (and, for a link
into a markdown page, at a heading that exists): pages that moved or were dropped leave no dead links behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def links(page: Path) -> list[str]:
    """The link targets of a page, outside code blocks and inline code."""
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    slugs = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_pages_exist() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "bench/README.md", "docs/api.md", "docs/configuration.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not checked offline
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading '#{anchor}' in {resolved.relative_to(ROOT)}")
    assert not broken, f"dead links in {page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_link_parser_sees_links_and_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A `code` title: yes?\n[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n![d](img.png#top)\n")
    assert links(page) == ["x.md", "img.png#top"]
    assert anchors(page) == {"a-code-title-yes"}


def test_bench_readme_lists_every_benchmark() -> None:
    bench = ROOT / "bench"
    readme = (bench / "README.md").read_text(encoding="utf-8")
    scripts = [p.name for p in bench.iterdir() if p.suffix in (".py", ".sh") and not p.name.startswith("_")]
    packages = [f"{p.name}/" for p in bench.iterdir() if (p / "__main__.py").is_file()]
    missing = sorted(name for name in scripts + packages if f"`{name}`" not in readme)
    assert not missing, f"bench/README.md does not describe {missing}: add what each measures, its command and JSON"
