"""The platform's stores for a process: ``running`` opens the configured PostgreSQL and Redis,
or starts the embedded ones (``stack``: development and tests, no install needed). Imported by
the entry points only (CLI, worker, dev server).
"""
