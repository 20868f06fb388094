"""An instance's secrets at rest: generated per tenant, stored only as bound ciphertext.

Each value is bound to (tenant, ``n8n_instances``, tenant id, field): a ciphertext copied to
another tenant's row, or from the API-key column to the password column, does not decrypt.
Plaintexts exist only while a step needs them (the runtime's environment, the n8n API).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

from zixly.provisioning.instances import InstanceRow
from zixly.provisioning.n8n.bootstrap import InstanceSecrets
from zixly.security.crypto import Binding, Keyring, Secret

TABLE = "n8n_instances"


class SecretField(enum.StrEnum):
    ENCRYPTION_KEY = "encryption_key"
    OWNER_PASSWORD = "owner_password"  # noqa: S105 - a column name, not a password
    API_KEY = "api_key"

    @property
    def column(self) -> str:
        return f"{self.value}_ciphertext"


def binding(tenant_id: uuid.UUID, secret: SecretField) -> Binding:
    return Binding(str(tenant_id), TABLE, str(tenant_id), secret.value)


@dataclass(frozen=True)
class SealedSecrets:
    """Column values for a new instance: the owner's email and two ciphertexts."""

    owner_email: str
    encryption_key_ciphertext: str = field(repr=False)
    owner_password_ciphertext: str = field(repr=False)

    def columns(self) -> dict[str, Any]:
        return {
            "owner_email": self.owner_email,
            "encryption_key_ciphertext": self.encryption_key_ciphertext,
            "owner_password_ciphertext": self.owner_password_ciphertext,
        }


class InstanceSecretBox:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def generate(self, tenant_id: uuid.UUID, tenant_slug: str) -> SealedSecrets:
        """Fresh random secrets for one tenant (never shared), sealed for its row."""
        fresh = InstanceSecrets.generate(tenant_slug)
        return SealedSecrets(
            owner_email=fresh.owner_email,
            encryption_key_ciphertext=self.seal(
                tenant_id, SecretField.ENCRYPTION_KEY, fresh.encryption_key
            ),
            owner_password_ciphertext=self.seal(
                tenant_id, SecretField.OWNER_PASSWORD, fresh.owner_password
            ),
        )

    def seal(self, tenant_id: uuid.UUID, secret: SecretField, value: str | Secret) -> str:
        return self.keyring.encrypt(value, binding(tenant_id, secret))

    def open(self, row: InstanceRow, secret: SecretField) -> Secret | None:
        ciphertext: str | None = getattr(row, secret.column)
        if ciphertext is None:
            return None
        return self.keyring.decrypt(ciphertext, binding(row.tenant_id, secret))

    def encryption_key(self, row: InstanceRow) -> Secret:
        key = self.open(row, SecretField.ENCRYPTION_KEY)
        if key is None:
            raise LookupError("the instance has no encryption key yet")
        return key

    def for_bootstrap(self, row: InstanceRow) -> InstanceSecrets:
        """What ``bootstrap_instance`` needs (its fields are kept out of reprs)."""
        password = self.open(row, SecretField.OWNER_PASSWORD)
        if password is None or row.owner_email is None:
            raise LookupError("the instance has no owner credentials yet")
        api_key = self.open(row, SecretField.API_KEY)
        return InstanceSecrets(
            owner_email=row.owner_email,
            owner_password=password.reveal(),
            encryption_key=self.encryption_key(row).reveal(),
            api_key=api_key.reveal() if api_key is not None else None,
        )
