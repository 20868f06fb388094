"""Provider integrations: the provider registry, the token endpoint adapter, token storage
and race-free refresh."""
