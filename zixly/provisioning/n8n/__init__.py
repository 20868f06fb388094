"""n8n itself, as a client: the single HTTP client for its APIs, headless bootstrap,
workflow bundles (export/import) and template fingerprints."""
