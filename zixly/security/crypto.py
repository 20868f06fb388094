"""Encryption of stored secrets: AES-256-GCM, a key id in every value, bound to its place.

A stored value looks like ``v1.<kid>.<nonce>.<ciphertext+tag>`` (both parts unpadded
base64url). The nonce is 12 random bytes per value; with random nonces one key must not seal
more than about 2^32 values, far beyond what a tenant's secrets need, and rotation starts a
new key long before that.

The associated data is ``zixly|v1|<tenant>|<table>|<row>|<field>``: authenticated, not stored.
A value copied to another tenant, table, row or field therefore fails to decrypt instead of
silently becoming that place's secret. The parts may not contain ``|``, so two different
places can never produce the same associated data.

Keys come from a ``Keyring``: every known key by id, one of them active. Encryption always
uses the active key; decryption picks the key named in the value, so values sealed with an
older key keep working after the active key changes (rotation re-encrypts them later).
Configured as ``ZIXLY_ENCRYPTION_KEYS`` (``kid:base64key,...``) and
``ZIXLY_ENCRYPTION_ACTIVE_KID``; unset in dev, one key is generated once into
``data_dir/encryption-keys`` (mode 0600), like the dev JWT secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from zixly.core.errors import ZixlyError
from zixly.core.settings import Settings

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEYS_FILE = "encryption-keys"
_KID = r"[A-Za-z0-9_-]{1,32}"
_B64 = r"[A-Za-z0-9_-]+"
# The database CHECK constraints test the prefix ``^v1\.[A-Za-z0-9_-]+\.``; this is the
# whole shape.
CIPHERTEXT = re.compile(rf"^{VERSION}\.({_KID})\.({_B64})\.({_B64})$")
_KID_ONLY = re.compile(rf"^{_KID}$")


class EncryptionError(ZixlyError):
    code = "ENCRYPTION_ERROR"


class KeyringError(EncryptionError):
    """The configured keys are unusable (bad format, wrong length, no active key)."""

    code = "KEYRING_INVALID"


class DecryptionError(EncryptionError):
    """A value cannot be decrypted here: malformed, tampered with, or bound elsewhere.

    The message never contains the value or any part of a plaintext.
    """

    code = "DECRYPTION_FAILED"


class UnknownKeyError(DecryptionError):
    code = "UNKNOWN_ENCRYPTION_KEY"


class Secret:
    """A plaintext secret that shows as ``***`` in reprs, strings, f-strings and logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not serialisable; store its ciphertext")


@dataclass(frozen=True)
class Binding:
    """Where a ciphertext belongs; it decrypts only with the same binding."""

    tenant_id: str
    table: str
    row: str
    field: str

    def __post_init__(self) -> None:
        for name in ("tenant_id", "table", "row", "field"):
            part = str(getattr(self, name))
            if not part or "|" in part:
                raise EncryptionError(f"binding {name} must be non-empty and free of '|'")

    @property
    def associated_data(self) -> bytes:
        parts = ("zixly", VERSION, self.tenant_id, self.table, self.row, self.field)
        return "|".join(str(p) for p in parts).encode()


# --- the primitive ---------------------------------------------------------------------------


def seal(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-GCM: ciphertext followed by the 16-byte tag."""
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, nonce: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, sealed, associated_data)
    except InvalidTag as exc:
        raise DecryptionError(
            "the value does not authenticate (tampered with, or bound to another place)"
        ) from exc


# --- the keyring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyring:
    keys: Mapping[str, bytes] = field(repr=False)
    active_kid: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("the keyring holds no key")
        for kid, key in self.keys.items():
            if not _KID_ONLY.match(kid):
                raise KeyringError(f"key id {kid!r} must match {_KID}")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {kid!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        if self.active_kid not in self.keys:
            raise KeyringError(f"the active key id {self.active_kid!r} is not in the keyring")

    def __repr__(self) -> str:
        return f"Keyring(kids={sorted(self.keys)!r}, active_kid={self.active_kid!r})"

    @classmethod
    def parse(cls, entries: str, active_kid: str | None = None) -> Keyring:
        """``kid:base64key`` entries separated by commas or newlines; with no ``active_kid``
        the last entry is active (appending a key and restarting rotates)."""
        keys: dict[str, bytes] = {}
        for entry in re.split(r"[,\n]", entries):
            entry = entry.strip()
            if not entry:
                continue
            kid, sep, encoded = entry.partition(":")
            if not sep:
                raise KeyringError("each key entry must be kid:base64key")
            kid = kid.strip()
            if kid in keys:
                raise KeyringError(f"key id {kid!r} appears twice")
            keys[kid] = _decode_key(kid, encoded.strip())
        if not keys:
            raise KeyringError("no encryption keys configured")
        return cls(keys=keys, active_kid=active_kid or list(keys)[-1])

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        active = settings.encryption_active_kid
        if settings.encryption_keys is not None:
            return cls.parse(settings.encryption_keys.get_secret_value(), active)
        return cls.parse(_dev_keys(Path(settings.data_dir)), active)

    def encrypt(self, plaintext: str | Secret, binding: Binding) -> str:
        value = plaintext.reveal() if isinstance(plaintext, Secret) else plaintext
        nonce = os.urandom(NONCE_BYTES)
        sealed = seal(self.keys[self.active_kid], nonce, value.encode(), binding.associated_data)
        return ".".join((VERSION, self.active_kid, _b64(nonce), _b64(sealed)))

    def decrypt(self, value: str, binding: Binding) -> Secret:
        kid, nonce, sealed = parse_ciphertext(value)
        key = self.keys.get(kid)
        if key is None:
            raise UnknownKeyError(f"no key {kid!r} in the keyring", kid=kid)
        plaintext = open_sealed(key, nonce, sealed, binding.associated_data)
        try:
            return Secret(plaintext.decode())
        except UnicodeDecodeError as exc:  # authenticated, so only a bug could get here
            raise DecryptionError("the decrypted value is not text") from exc

    def kid_of(self, value: str) -> str:
        return parse_ciphertext(value)[0]

    def needs_rotation(self, value: str) -> bool:
        return self.kid_of(value) != self.active_kid


def parse_ciphertext(value: str) -> tuple[str, bytes, bytes]:
    """(kid, nonce, ciphertext+tag) of a stored value; DecryptionError if malformed."""
    match = CIPHERTEXT.match(value) if isinstance(value, str) else None
    if match is None:
        raise DecryptionError("not a v1 ciphertext")
    kid, nonce_text, sealed_text = match.groups()
    try:
        nonce, sealed = _unb64(nonce_text), _unb64(sealed_text)
    except (binascii.Error, ValueError) as exc:
        raise DecryptionError("not a v1 ciphertext (bad base64)") from exc
    if len(nonce) != NONCE_BYTES or len(sealed) < TAG_BYTES:
        raise DecryptionError("not a v1 ciphertext (wrong nonce or tag length)")
    return kid, nonce, sealed


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_entry(kid: str, key: bytes) -> str:
    """One ``kid:base64key`` entry, as ``ZIXLY_ENCRYPTION_KEYS`` takes it."""
    return f"{kid}:{base64.b64encode(key).decode()}"


def _dev_keys(data_dir: Path) -> str:
    """The dev keyring file, created with one fresh key on first use."""
    path = data_dir / KEYS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEYS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key_entry("dev1", generate_key()) + "\n")
        try:
            os.link(tmp, path)  # fails if another process created it meanwhile: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text()


def _decode_key(kid: str, encoded: str) -> bytes:
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        if "-" in encoded or "_" in encoded:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyringError(f"key {kid!r} is not valid base64") from exc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: only the canonical encoding (unused trailing bits zero) is accepted, so no two
    texts decode to the same bytes."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("non-canonical base64")
    return data


__all__ = [
    "CIPHERTEXT",
    "Binding",
    "DecryptionError",
    "EncryptionError",
    "Keyring",
    "KeyringError",
    "Secret",
    "UnknownKeyError",
    "generate_key",
    "key_entry",
    "open_sealed",
    "parse_ciphertext",
    "seal",
]
