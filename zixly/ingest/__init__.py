"""Ingest: what tenants' n8n workflows post to Zixly (tokens, validation, set-based writes)."""
