"""Zixly: control plane for per-tenant workflow automation."""

__version__ = "0.1.0"
