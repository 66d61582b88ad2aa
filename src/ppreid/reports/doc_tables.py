"""Tables in the docs that ``experiments/tables.py`` writes, so nobody edits a number by hand.

A table in a Markdown page sits between two markers; the first holds the arguments of the
``experiments/tables.py`` command that renders it, with paths relative to the repository root::

    <!-- table: experiments/results/dppp_sandbox --metrics R1 mAP val:mAP -->
    ...                                       (written by ``tables.py --update-docs``, never by hand)
    <!-- /table -->

``tables.py --update-docs`` rewrites every block of the pages (README.md, docs/*.md,
experiments/README.md) with the command line, its table and its units line; ``--check-docs`` only
compares and fails on a difference (the test suite runs the same comparison on the committed
bundles). A block whose results are not committed yet says so instead of showing older numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

BLOCK = re.compile(r"^<!-- table: (?P<args>[^\n]+?) -->\n(?P<body>.*?)^<!-- /table -->$", re.M | re.S)
OPEN = re.compile(r"^<!-- table:", re.M)
DOC_PAGES = ("README.md", "docs/*.md", "experiments/README.md")


def doc_pages(root: Path) -> list[Path]:
    """The Markdown pages that may hold table blocks, under the repository ``root``."""
    return [p for pattern in DOC_PAGES for p in sorted(Path(root).glob(pattern))]


def blocks(text: str, where: str = "") -> list[re.Match]:
    """The table blocks of a page; error if a block is opened and never closed."""
    found = list(BLOCK.finditer(text))
    if len(found) != len(OPEN.findall(text)):
        raise ValueError(f"{where}: a '<!-- table: ... -->' marker without its '<!-- /table -->'")
    return found


def rewrite(text: str, render: Callable[[str], str], where: str = "") -> str:
    """``text`` with every block's body replaced by ``render(args)`` (which ends with a newline)."""
    out, last = [], 0
    for m in blocks(text, where):
        out += [text[last : m.start("body")], render(m.group("args"))]
        last = m.end("body")
    return "".join(out) + text[last:]


def stale_blocks(pages: Iterable[Path], render: Callable[[str], str], root: Path) -> list[str]:
    """``<page>: <args>`` of every block whose body is not what ``render`` gives now."""
    stale = []
    for page in pages:
        text = page.read_text()
        where = str(page.relative_to(root)) if page.is_relative_to(root) else str(page)
        for m in blocks(text, where):
            if m.group("body") != render(m.group("args")):
                stale.append(f"{where}: {m.group('args')}")
    return stale


def update_pages(pages: Iterable[Path], render: Callable[[str], str], write: Callable[[Path, str], None]) -> list[Path]:
    """Rewrite the pages whose blocks changed (through ``write``, e.g. an atomic write); the changed pages."""
    changed = []
    for page in pages:
        text = page.read_text()
        new = rewrite(text, render, str(page))
        if new != text:
            write(page, new)
            changed.append(page)
    return changed
