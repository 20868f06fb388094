"""Local stand-ins for provider APIs (dev demo and tests)."""
