"""What differs per n8n line (zixly.provisioning.n8n.versions, .owner_env): no n8n needed.

The running behaviour (an instance of each line starting, bootstrapping and serving a
webhook with this environment) is in tests/provisioning (the default line throughout,
1.123.x in test_legacy_n8n.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import bcrypt
import pytest

from zixly.core.settings import Settings
from zixly.provisioning.n8n.bootstrap import InstanceSecrets
from zixly.provisioning.n8n.owner_env import PASSWORD_HASH, owner_env, password_hash
from zixly.provisioning.n8n.versions import (
    CURRENT_N8N_VERSION,
    EXCLUDED_NODES,
    LEGACY_N8N_VERSION,
    instance_env,
    line,
    webhook_env,
)
from zixly.provisioning.runtimes.distributions import DEFAULT_N8N_VERSION


def test_new_tenants_get_2x_and_the_legacy_line_is_1_123() -> None:
    assert CURRENT_N8N_VERSION.startswith("2.") and LEGACY_N8N_VERSION.startswith("1.123.")
    assert Settings().n8n_version == CURRENT_N8N_VERSION == DEFAULT_N8N_VERSION


@pytest.mark.parametrize(
    ("version", "node", "no_scripts", "owner_from_env", "publishes"),
    [
        ("1.123.81", 22, False, False, False),
        ("2.16.0", 24, True, False, True),  # before the owner could come from the environment
        ("2.17.0", 24, True, True, True),
        ("2.41.1", 24, True, True, True),
        ("2.41.1-next", 24, True, True, True),  # a pre-release (tests alias a version so)
    ],
)
def test_each_line_knows_its_node_install_owner_and_activation(
    version: str, node: int, no_scripts: bool, owner_from_env: bool, publishes: bool
) -> None:
    found = line(version)
    assert (found.node_major, found.ignore_install_scripts) == (node, no_scripts)
    assert (found.owner_from_env, found.publishes) == (owner_from_env, publishes)


def test_not_a_version_is_refused() -> None:
    with pytest.raises(ValueError, match="not an n8n version"):
        line("latest")


def test_1x_keeps_the_environment_it_always_had() -> None:
    """Existing tenants on 1.123 must not see their instance's environment change."""
    env = instance_env(LEGACY_N8N_VERSION, user_folder="/data/user")
    assert env == {
        "N8N_DIAGNOSTICS_ENABLED": "false",
        "N8N_PERSONALIZATION_ENABLED": "false",
        "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
        "N8N_SECURE_COOKIE": "false",
        "N8N_RUNNERS_ENABLED": "true",
        "N8N_BLOCK_ENV_ACCESS_IN_NODE": "true",
        "DB_SQLITE_POOL_SIZE": "2",
        "N8N_GIT_NODE_DISABLE_BARE_REPOS": "true",
        "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "true",
    }
    assert webhook_env(LEGACY_N8N_VERSION, "http://h/") == {"WEBHOOK_URL": "http://h/"}


def test_2x_follows_the_2_0_breaking_changes() -> None:
    env = instance_env(CURRENT_N8N_VERSION, user_folder="/home/node/")
    assert env["N8N_RUNNERS_MODE"] == "internal"
    assert "N8N_RUNNERS_ENABLED" not in env  # always on in 2.x; n8n calls it safe to remove
    assert env["N8N_BLOCK_ENV_ACCESS_IN_NODE"] == "true"
    assert json.loads(env["NODES_EXCLUDE"]) == list(EXCLUDED_NODES)
    assert "n8n-nodes-base.executeCommand" in EXCLUDED_NODES
    assert env["N8N_RESTRICT_FILE_ACCESS_TO"] == "/home/node/files"
    assert env["N8N_BLOCK_FILE_ACCESS_TO_N8N_FILES"] == "true"
    assert env["N8N_SKIP_AUTH_ON_OAUTH_CALLBACK"] == "false"
    assert env["N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS"] == "true"
    assert env["DB_SQLITE_POOL_SIZE"] == "2"
    for outside in (
        "N8N_DIAGNOSTICS_ENABLED",
        "N8N_VERSION_NOTIFICATIONS_ENABLED",
        "N8N_TEMPLATES_ENABLED",
        "N8N_COMMUNITY_PACKAGES_ENABLED",
        "N8N_DYNAMIC_BANNERS_ENABLED",
    ):
        assert env[outside] == "false", outside
    assert env["N8N_DISABLED_MODULES"] == "mcp-registry"
    assert webhook_env(CURRENT_N8N_VERSION, "http://h/") == {"N8N_WEBHOOK_URL": "http://h/"}


def test_the_owner_comes_from_the_environment_on_2_17_and_later_only() -> None:
    secrets = InstanceSecrets.generate("acme")
    assert secrets.instance_env(LEGACY_N8N_VERSION) == {
        "N8N_ENCRYPTION_KEY": secrets.encryption_key
    }
    env = secrets.instance_env(CURRENT_N8N_VERSION)
    assert env["N8N_ENCRYPTION_KEY"] == secrets.encryption_key
    assert env["N8N_INSTANCE_OWNER_MANAGED_BY_ENV"] == "true"
    assert env["N8N_INSTANCE_OWNER_EMAIL"] == secrets.owner_email
    assert (env["N8N_INSTANCE_OWNER_FIRST_NAME"], env["N8N_INSTANCE_OWNER_LAST_NAME"]) == (
        "Zixly",
        "Automation",
    )
    assert secrets.owner_password not in env.values()  # only its hash
    assert bcrypt.checkpw(secrets.owner_password.encode(), env[PASSWORD_HASH].encode())
    assert owner_env("2.16.3", "o@example.com", "pw") == {}


def test_the_password_hash_is_bcrypt_and_stable_so_specs_do_not_churn() -> None:
    first, again = password_hash("Secret-Passw0rd"), password_hash("Secret-Passw0rd")
    assert first == again and first.startswith("$2b$10$") and len(first) == 60
    assert bcrypt.checkpw(b"Secret-Passw0rd", first.encode())
    assert not bcrypt.checkpw(b"Secret-Passw0rd!", first.encode())
    other = password_hash("Another-Passw0rd")
    assert other[:29] != first[:29]  # another password, another salt


def test_make_test_installs_the_legacy_line_the_tests_use() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert f"N8N_LEGACY := {LEGACY_N8N_VERSION}\n" in makefile
    assert "zixly n8n install --version $(N8N_LEGACY)" in makefile
