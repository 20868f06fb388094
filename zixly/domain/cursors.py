"""Opaque, tamper-evident pagination cursors bound to one tenant and one listing.

A cursor is ``base64url(json(keys)) + "." + mac``; the MAC covers the tenant id and the
listing name, so a cursor from another tenant or another query is rejected as invalid
rather than silently reinterpreted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from json.encoder import encode_basestring_ascii
from typing import Any

from zixly.core.errors import ValidationError

MAX_CURSOR_LENGTH = 512


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"zixly-cursor:" + secret).digest()
        self._prefixes: dict[tuple[uuid.UUID | None, str], Any] = {}

    def _mac(self, tenant_id: uuid.UUID | None, listing: str, payload: bytes) -> str:
        """Keyed BLAKE2b (a MAC by design) over tenant, listing and payload, 128 bits.

        The keyed state after the tenant/listing prefix is computed once and copied per
        cursor: a page of 500 edges signs 500 cursors.
        """
        prefix = self._prefixes.get((tenant_id, listing))
        if prefix is None:
            if len(self._prefixes) > 4096:  # bounded: tenants x listings seen by this process
                self._prefixes.clear()
            prefix = hashlib.blake2b(key=self._key, digest_size=16)
            prefix.update(f"{tenant_id}|{listing}|".encode())
            self._prefixes[(tenant_id, listing)] = prefix
        mac = prefix.copy()
        mac.update(payload)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def encode(self, tenant_id: uuid.UUID | None, listing: str, keys: list[Any]) -> str:
        if all(type(key) is str for key in keys):
            # The same text json.dumps makes for a list of strings, without its overhead.
            text = "[" + ",".join(map(encode_basestring_ascii, keys)) + "]"
        else:
            text = json.dumps(keys, separators=(",", ":"), default=str)
        payload = base64.urlsafe_b64encode(text.encode()).rstrip(b"=")
        return payload.decode() + "." + self._mac(tenant_id, listing, payload)

    def decode(self, tenant_id: uuid.UUID | None, listing: str, cursor: str) -> list[Any]:
        invalid = ValidationError("malformed or foreign cursor", field="after")
        # A cursor is ASCII (base64url and a dot): anything else cannot be one of ours, and
        # neither the MAC comparison nor the base64 decoder takes other text.
        if len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii() or cursor.count(".") != 1:
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
