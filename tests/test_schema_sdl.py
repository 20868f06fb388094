"""schema.graphql is the committed contract: this fails when the code drifts from it."""

from __future__ import annotations

from zixly.graphql.schema import SCHEMA_FILE, render_sdl


def test_committed_sdl_matches_the_code() -> None:
    assert SCHEMA_FILE.exists(), "run `zixly schema --write` and commit schema.graphql"
    committed = SCHEMA_FILE.read_text()
    assert committed == render_sdl(), (
        "the GraphQL schema changed: review the diff, then run `zixly schema --write`"
    )
