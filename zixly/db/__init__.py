"""PostgreSQL access: engine, tenant-scoped transactions, models, bootstrap."""
