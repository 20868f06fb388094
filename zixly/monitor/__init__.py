"""Sync health: what tenants' n8n runs say about their integrations.

``executions`` reads an instance's finished runs since the monitor's cursor, ``rules`` folds
them into an integration's health (pure), ``store`` reads and writes the rows, and
``monitor`` runs one pass over every running instance, and ``jobs`` is the worker's
``monitor_sync_health`` cron job around it.
"""
