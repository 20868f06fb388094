"""A compiled fast path for Relay connection and plain list queries: a recognised
operation is answered with one SQL statement whose rows PostgreSQL assembles as JSON,
without graphql-core's field resolution; everything else is served by Strawberry unchanged."""
