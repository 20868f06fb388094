"""Alerts: email (SMTP) and Slack-compatible webhooks, per tenant, deduplicated."""
