"""What the schema tells a client about itself: introspection and "Did you mean" hints.

Both help a developer and both hand an attacker a map of the API (introspection the whole
schema; suggestions field, argument, type and enum names guessed a few letters at a time,
even with introspection off). In production both are off; in development both are on
(``Settings.introspection_enabled`` / ``suggestions_enabled``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, SchemaExtension

from zixly.core.settings import Settings

# graphql-core's did_you_mean(): " Did you mean 'a', 'b', or 'c'?" at the end of validation
# and coercion messages ("Did you mean the enum value 'X'?", "... to use an inline fragment
# on 'T'?"). GraphQL names cannot contain '?', so the hint ends at the first one.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def without_suggestions(message: str) -> str:
    return _SUGGESTION.sub("", message)


class HideSuggestions(SchemaExtension):
    """Strips suggestions from every error of the result: validation errors, variable
    coercion errors and anything else graphql-core words with ``did_you_mean``."""

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        result = self.execution_context.result
        errors: list[GraphQLError] = list(getattr(result, "errors", None) or [])
        errors += self.execution_context.pre_execution_errors or []
        for error in errors:
            error.message = without_suggestions(error.message)


def disclosure_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """The schema extensions that close what the settings close (none in development)."""
    extensions: list[Callable[[], SchemaExtension]] = []
    if not settings.introspection_enabled:
        extensions.append(DisableIntrospection)
    if not settings.suggestions_enabled:
        extensions.append(HideSuggestions)
    return extensions
