"""docs/lifecycle.md embeds what the state table generates: it cannot drift."""

from __future__ import annotations

import pathlib

from puregrpc._lifecycle import mermaid_diagram, misuse_table

DOC = pathlib.Path(__file__).parents[2] / "docs" / "lifecycle.md"


def test_state_diagram_is_generated_from_the_table() -> None:
    assert f"```mermaid\n{mermaid_diagram()}\n```" in DOC.read_text()


def test_misuse_table_is_generated_from_the_table() -> None:
    assert misuse_table() in DOC.read_text()
