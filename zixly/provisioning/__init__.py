"""Provisioning tenant n8n instances: install n8n, run it (processes or containers), bootstrap it."""
