"""The instance owner through the environment (n8n 2.17+, ``N8N_INSTANCE_OWNER_*``).

With ``N8N_INSTANCE_OWNER_MANAGED_BY_ENV=true`` n8n creates (and at every start re-applies)
the owner from these variables, so no ``POST /rest/owner/setup`` race exists: the setup
screen never appears, and Zixly logs in with the password it keeps. n8n wants the password
as a bcrypt hash (``N8N_INSTANCE_OWNER_PASSWORD_HASH``; a plain password breaks login).

The hash's salt is derived from the password itself, so the same secrets give the same
environment: a runtime compares the environment to decide whether an instance must be
re-created (zixly.provisioning.runtimes.docker), and a fresh random salt would re-create it
at every deploy. The password is random per tenant (40 characters), so a derived salt gives
nothing away that a random one would not.
"""

from __future__ import annotations

import base64
import hashlib

import bcrypt

from zixly.provisioning.n8n.versions import line

MANAGED_BY_ENV = "N8N_INSTANCE_OWNER_MANAGED_BY_ENV"
PASSWORD_HASH = "N8N_INSTANCE_OWNER_PASSWORD_HASH"  # noqa: S105 - a variable name
_ROUNDS = 10  # n8n's own cost for user passwords
_STANDARD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def password_hash(password: str) -> str:
    """bcrypt ``$2b$`` hash of ``password`` with a salt derived from it (see above)."""
    raw = hashlib.sha256(b"zixly-n8n-owner\0" + password.encode()).digest()[:16]
    salt = base64.b64encode(raw).decode().rstrip("=").translate(str.maketrans(_STANDARD, _BCRYPT))
    return bcrypt.hashpw(password.encode(), f"$2b${_ROUNDS:02d}${salt}".encode()).decode()


def owner_env(
    version: str, email: str, password: str, name: tuple[str, str] = ("Zixly", "Automation")
) -> dict[str, str]:
    """The owner variables for ``version``; empty where n8n has no such feature (1.x)."""
    if not line(version).owner_from_env:
        return {}
    return {
        MANAGED_BY_ENV: "true",
        "N8N_INSTANCE_OWNER_EMAIL": email,
        "N8N_INSTANCE_OWNER_FIRST_NAME": name[0],
        "N8N_INSTANCE_OWNER_LAST_NAME": name[1],
        PASSWORD_HASH: password_hash(password),
    }


__all__ = ["MANAGED_BY_ENV", "PASSWORD_HASH", "owner_env", "password_hash"]
