"""Counts the docs state are counted here, so that they cannot drift from what they count."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "docs" / "bad-inputs.md"


def catalog_rows() -> list[list[str]]:
    """The catalog's cases: each row of its big table, split into cells."""
    return [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in CATALOG.read_text().splitlines()
        if line.startswith("| `")
    ]


def summary() -> dict[str, int]:
    """The catalog's summary table: surface -> cases."""
    text = CATALOG.read_text()
    table = text.split("| surface | cases |", 1)[1].split("\n\n", 1)[0]
    counts = {}
    for line in table.splitlines():
        cells = [cell.strip().strip("*") for cell in line.split("|")[1:-1]]
        if len(cells) == 2 and cells[1].isdigit():
            counts[cells[0]] = int(cells[1])
    return counts


def test_the_catalogs_summary_counts_its_rows() -> None:
    rows = catalog_rows()
    counts = summary()
    by_surface = Counter(row[1] for row in rows)
    assert counts.pop("total") == len(rows)
    for surface in ("CLI", "SDK", "MCP"):
        assert counts.pop(surface) == by_surface[surface], surface
    # The kubectl lines split the rest by outcome (refused by the API server, by the
    # operator, on a schedule's status, races): together they are every other row.
    assert all(name.startswith("kubectl") for name in counts)
    assert sum(counts.values()) == len(rows) - sum(by_surface[s] for s in ("CLI", "SDK", "MCP"))


def test_the_readme_states_the_catalogs_size() -> None:
    stated = re.findall(r"docs/bad-inputs\.md`, (\d+) cases", (REPO / "README.md").read_text())
    assert stated == [str(len(catalog_rows()))]
