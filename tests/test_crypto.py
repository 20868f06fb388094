"""Stored-secret encryption: AES-256-GCM with key ids and values bound to their place."""

from __future__ import annotations

import base64
import dataclasses
import logging
import pickle
import stat
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import World, make_settings
from zixly.security.crypto import (
    CIPHERTEXT,
    Binding,
    DecryptionError,
    Keyring,
    KeyringError,
    Secret,
    UnknownKeyError,
    key_entry,
    open_sealed,
    parse_ciphertext,
    seal,
)

TENANT = str(uuid.UUID(int=1))
BINDING = Binding(TENANT, "integrations", "row-1", "access_token")
KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
PLAINTEXT = "xero-access-token-Ünïcode-✓"


def keyring(*entries: tuple[str, bytes], active: str | None = None) -> Keyring:
    return Keyring.parse(",".join(key_entry(kid, key) for kid, key in entries), active)


# --- the primitive against published vectors -------------------------------------------------
# Source: D. McGrew and J. Viega, "The Galois/Counter Mode of Operation (GCM)", revised
# submission to NIST (2005), Appendix B "AES Test Vectors", Test Cases 14 and 16 (AES-256,
# 96-bit IV). The values below are copied from that document, not computed.
GCM_KEY_16 = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
GCM_IV_16 = bytes.fromhex("cafebabefacedbaddecaf888")
GCM_PLAIN_16 = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
GCM_AAD_16 = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_CIPHER_16 = bytes.fromhex(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
)
GCM_TAG_16 = bytes.fromhex("76fc6ece0f4e1768cddf8853bb2d551b")


def test_gcm_spec_test_case_14() -> None:
    sealed = seal(bytes(32), bytes(12), bytes(16), b"")
    assert sealed.hex() == "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"


def test_gcm_spec_test_case_16_with_associated_data() -> None:
    sealed = seal(GCM_KEY_16, GCM_IV_16, GCM_PLAIN_16, GCM_AAD_16)
    assert sealed == GCM_CIPHER_16 + GCM_TAG_16
    assert open_sealed(GCM_KEY_16, GCM_IV_16, sealed, GCM_AAD_16) == GCM_PLAIN_16
    with pytest.raises(DecryptionError):
        open_sealed(GCM_KEY_16, GCM_IV_16, sealed, GCM_AAD_16[:-1])


# --- the stored format -------------------------------------------------------------------------


def test_round_trip_uses_the_active_key_a_fresh_nonce_and_the_v1_format() -> None:
    ring = keyring(("k1", KEY_A))
    first = ring.encrypt(PLAINTEXT, BINDING)
    second = ring.encrypt(Secret(PLAINTEXT), BINDING)
    assert first != second  # a random nonce per value
    for value in (first, second):
        version, kid, nonce, body = value.split(".")
        assert (version, kid) == ("v1", "k1")
        assert len(base64.urlsafe_b64decode(nonce + "==")) == 12
        # ciphertext is as long as the UTF-8 plaintext, plus the 16-byte tag
        assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == (
            len(PLAINTEXT.encode()) + 16
        )
        assert CIPHERTEXT.match(value)
        assert PLAINTEXT not in value
        secret = ring.decrypt(value, BINDING)
        assert secret.reveal() == PLAINTEXT


def test_the_value_decrypts_with_the_published_primitive_and_the_documented_aad() -> None:
    """The format is what the docs say: an independent reader can open it with AESGCM."""
    value = keyring(("k1", KEY_A)).encrypt("hello", BINDING)
    _, _, nonce_text, body_text = value.split(".")
    nonce = base64.urlsafe_b64decode(nonce_text + "=" * (-len(nonce_text) % 4))
    body = base64.urlsafe_b64decode(body_text + "=" * (-len(body_text) % 4))
    aad = f"zixly|v1|{TENANT}|integrations|row-1|access_token".encode()
    assert open_sealed(KEY_A, nonce, body, aad) == b"hello"


@pytest.mark.parametrize("part", [0, 1, 2, 3])
def test_tampering_with_any_part_fails_typed(part: int) -> None:
    ring = keyring(("k1", KEY_A), ("k2", KEY_B), active="k1")
    value = ring.encrypt(PLAINTEXT, BINDING)
    parts = value.split(".")
    if part == 1:
        parts[1] = "k2"  # another real key: must not authenticate
    else:
        text = parts[part]
        middle = len(text) // 2
        parts[part] = text[:middle] + ("A" if text[middle] != "A" else "B") + text[middle + 1 :]
    with pytest.raises(DecryptionError) as caught:
        ring.decrypt(".".join(parts), BINDING)
    assert PLAINTEXT not in str(caught.value) and PLAINTEXT not in repr(caught.value)


def test_every_single_character_change_of_the_body_is_detected() -> None:
    ring = keyring(("k1", KEY_A))
    value = ring.encrypt("short", BINDING)
    head, body = value.rsplit(".", 1)
    for index in range(len(body)):
        for replacement in "AQgw_-":  # includes changes to only the trailing unused bits
            if body[index] == replacement:
                continue
            changed = body[:index] + replacement + body[index + 1 :]
            with pytest.raises(DecryptionError):
                ring.decrypt(f"{head}.{changed}", BINDING)


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.replace(BINDING, row="row-2"),
        dataclasses.replace(BINDING, tenant_id=str(uuid.UUID(int=2))),
        dataclasses.replace(BINDING, field="refresh_token"),
        dataclasses.replace(BINDING, table="n8n_instances"),
    ],
    ids=["other-row", "other-tenant", "other-field", "other-table"],
)
def test_a_value_copied_to_another_place_does_not_decrypt(other: Binding) -> None:
    ring = keyring(("k1", KEY_A))
    value = ring.encrypt(PLAINTEXT, BINDING)
    with pytest.raises(DecryptionError, match="does not authenticate"):
        ring.decrypt(value, other)


def test_bindings_cannot_be_made_ambiguous() -> None:
    with pytest.raises(Exception, match="free of"):
        Binding(TENANT, "integrations", "row|x", "f")
    with pytest.raises(Exception, match="non-empty"):
        Binding(TENANT, "", "row", "f")


def test_an_unknown_key_id_is_a_typed_error() -> None:
    value = keyring(("old", KEY_A)).encrypt(PLAINTEXT, BINDING)
    with pytest.raises(UnknownKeyError) as caught:
        keyring(("new", KEY_B)).decrypt(value, BINDING)
    assert caught.value.code == "UNKNOWN_ENCRYPTION_KEY"
    assert isinstance(caught.value, DecryptionError)


@pytest.mark.parametrize(
    "value",
    ["", "plaintext", "v2.k1.AAAA.AAAA", "v1.k1.AAAA", "v1.k 1.AAAA.AAAA", "v1.k1.AAAA.AAAA"],
)
def test_malformed_values_are_rejected(value: str) -> None:
    with pytest.raises(DecryptionError):
        keyring(("k1", KEY_A)).decrypt(value, BINDING)


def test_rotation_old_values_still_decrypt_after_the_active_key_changes() -> None:
    before = keyring(("k1", KEY_A))
    old_value = before.encrypt(PLAINTEXT, BINDING)
    after = keyring(("k1", KEY_A), ("k2", KEY_B))  # appended key becomes active
    assert after.active_kid == "k2"
    new_value = after.encrypt(PLAINTEXT, BINDING)
    assert new_value.split(".")[1] == "k2"
    assert after.decrypt(old_value, BINDING).reveal() == PLAINTEXT
    assert after.decrypt(new_value, BINDING).reveal() == PLAINTEXT
    assert after.needs_rotation(old_value) and not after.needs_rotation(new_value)
    pinned = keyring(("k1", KEY_A), ("k2", KEY_B), active="k1")
    assert pinned.encrypt(PLAINTEXT, BINDING).split(".")[1] == "k1"
    with pytest.raises(UnknownKeyError):
        before.decrypt(new_value, BINDING)


# --- keyring configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "active", "message"),
    [
        ("", None, "no encryption keys"),
        ("k1", None, "kid:base64key"),
        (f"k1:{base64.b64encode(bytes(16)).decode()}", None, "16 bytes"),
        ("k1:not*base64", None, "not valid base64"),
        (f"{key_entry('k1', KEY_A)},{key_entry('k1', KEY_B)}", None, "twice"),
        (key_entry("k1", KEY_A), "k9", "not in the keyring"),
        (key_entry("bad kid", KEY_A), None, "must match"),
    ],
)
def test_bad_keyrings_are_refused(entries: str, active: str | None, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.parse(entries, active)


def test_urlsafe_and_standard_base64_keys_are_both_accepted() -> None:
    key = bytes([0xFB, 0xFF] * 16)  # encodes with + and / (standard) or - and _ (urlsafe)
    standard = Keyring.parse("a:" + base64.b64encode(key).decode())
    urlsafe = Keyring.parse("a:" + base64.urlsafe_b64encode(key).decode().rstrip("="))
    assert standard.keys["a"] == urlsafe.keys["a"] == key


def test_configured_keys_come_from_settings(tmp_path: Path) -> None:
    entries = f"{key_entry('k1', KEY_A)}, {key_entry('k2', KEY_B)}"
    settings = make_settings(tmp_path, encryption_keys=entries, encryption_active_kid="k1")
    ring = Keyring.from_settings(settings)
    assert ring.active_kid == "k1" and ring.keys == {"k1": KEY_A, "k2": KEY_B}
    assert not (tmp_path / "encryption-keys").exists()
    assert "k1" in repr(ring) and base64.b64encode(KEY_A).decode() not in repr(ring)
    assert base64.b64encode(KEY_A).decode() not in repr(settings)


def test_dev_keyring_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = Keyring.from_settings(settings)
    path = tmp_path / "encryption-keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.active_kid == "dev1" and len(first.keys["dev1"]) == 32
    value = first.encrypt(PLAINTEXT, BINDING)
    again = Keyring.from_settings(make_settings(tmp_path))
    assert again.keys == first.keys
    assert again.decrypt(value, BINDING).reveal() == PLAINTEXT
    assert Keyring.from_settings(make_settings(tmp_path / "other")).keys != first.keys
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encryption-keys", "other"]


# --- Secret never shows its value ---------------------------------------------------------------


def test_secret_hides_its_value_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret("hunter2-very-secret")
    shown = [repr(secret), str(secret), f"{secret}", repr([secret]), repr({"k": secret})]
    assert all("hunter2" not in text for text in shown)
    assert str(secret) == "***"
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("value=%s", secret)
    assert "hunter2" not in caplog.text
    assert secret == Secret("hunter2-very-secret") and secret != Secret("other")
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)


# --- the database agrees with the format -------------------------------------------------------


async def test_the_integrations_check_constraint_accepts_exactly_our_ciphertexts(
    owner: asyncpg.Connection, world: World
) -> None:
    tenant = await world.tenant("crypto", clients=0)
    ring = keyring(("k1", KEY_A))
    row_id = uuid.uuid4()
    value = ring.encrypt(PLAINTEXT, Binding(str(tenant.id), "integrations", str(row_id), "x"))
    kid, nonce, _ = parse_ciphertext(value)
    assert (kid, len(nonce)) == ("k1", 12)
    await owner.execute(
        "INSERT INTO integrations (id, tenant_id, provider, access_token_ciphertext) "
        "VALUES ($1, $2, 'xero', $3)",
        row_id,
        tenant.id,
        value,
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await owner.execute(
            "INSERT INTO integrations (tenant_id, provider, access_token_ciphertext) "
            "VALUES ($1, 'hubspot', $2)",
            tenant.id,
            PLAINTEXT,
        )
    # The constraint's own pattern (as migrated) and ours agree on a few shapes.
    pattern = await owner.fetchval(
        "SELECT substring(pg_get_constraintdef(oid) FROM '''(\\^v1[^'']*)''') "
        "FROM pg_constraint WHERE conname = 'integrations_access_token_is_ciphertext'"
    )
    assert pattern == r"^v1\.[A-Za-z0-9_-]+\."
    for sample in (value, "v1.k1.", "v1..x", "v2.k1.a.b", "V1.k1.a.b", PLAINTEXT):
        in_db = await owner.fetchval("SELECT $1::text ~ $2", sample, pattern)
        assert in_db == sample.startswith("v1.k1."), sample
        if CIPHERTEXT.match(sample):
            assert in_db
