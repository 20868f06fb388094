"""Opaque, tamper-evident pagination cursors bound to one tenant and one listing.

A cursor is ``base64url(json(keys)) + "." + hmac``; the MAC covers the tenant id and the
listing name, so a cursor from another tenant or another query is rejected as invalid
rather than silently reinterpreted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

from zixly.errors import ValidationError

MAX_CURSOR_LENGTH = 512


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"zixly-cursor:" + secret).digest()

    def _mac(self, tenant_id: uuid.UUID | None, listing: str, payload: bytes) -> str:
        message = f"{tenant_id}|{listing}|".encode() + payload
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def encode(self, tenant_id: uuid.UUID | None, listing: str, keys: list[Any]) -> str:
        payload = base64.urlsafe_b64encode(
            json.dumps(keys, separators=(",", ":"), default=str).encode()
        ).rstrip(b"=")
        return payload.decode() + "." + self._mac(tenant_id, listing, payload)

    def decode(self, tenant_id: uuid.UUID | None, listing: str, cursor: str) -> list[Any]:
        invalid = ValidationError("malformed or foreign cursor", field="after")
        if len(cursor) > MAX_CURSOR_LENGTH or cursor.count(".") != 1:
            raise invalid
        payload, mac = cursor.split(".")
        if not hmac.compare_digest(mac, self._mac(tenant_id, listing, payload.encode())):
            raise invalid
        try:
            keys = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError as exc:
            raise invalid from exc
        if not isinstance(keys, list):
            raise invalid
        return keys
