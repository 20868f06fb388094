"""The HTTP surface: Starlette app, middleware, health, metrics, CSV export."""
