"""What differs between the n8n lines Zixly runs (docs/n8n-versions.md).

Two lines are supported: 2.x, the default for new tenants, and 1.123.x, which existing
tenants keep until they are upgraded (an instance records its version; nothing moves it
silently). Everything that depends on the line is decided here, from the version string:

- the Node it needs (2.x: Node 24; 1.123: Node 22) and how it installs from npm (2.x: with
  ``--ignore-scripts`` and a rebuild of the native modules, because an optional Kafka
  dependency's install script downloads from outside the registries);
- the instance's environment (``instance_env``): 1.123 keeps the environment it always had,
  so an existing tenant's instance is not changed under it; 2.x gets its own hardening,
  following n8n's 2.0 breaking changes;
- whether the owner comes from the environment (2.17+, ``N8N_INSTANCE_OWNER_*``) or from
  ``POST /rest/owner/setup`` (1.x);
- whether activation publishes (2.x keeps the active version apart from the draft and
  registers webhooks asynchronously after a publish).

Task runners run in *internal* mode on both runtimes: n8n starts the runner as its own child
process. In a container that child shares the container's memory and CPU limits and its
isolation (no capabilities, no new privileges); external mode would need a second container
per tenant from n8n's runners image, which cannot be pulled here, and a shared auth token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

CURRENT_N8N_VERSION = "2.41.1"  # the default for new tenants
LEGACY_N8N_VERSION = "1.123.81"  # still supported for existing tenants
SUPPORTED_N8N_VERSIONS = (CURRENT_N8N_VERSION, LEGACY_N8N_VERSION)
_NUMBERS = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
# The nodes n8n 2.0 disables by default; named explicitly so a changed default cannot
# re-enable them (a tenant's workflow must not run commands or watch the host's files).
EXCLUDED_NODES = ("n8n-nodes-base.executeCommand", "n8n-nodes-base.localFileTrigger")
FILES_FOLDER = "files"  # under the user folder: the one place file nodes may read and write

# Every line: no calls home, hardened defaults (1.123 logs deprecation notices without the
# last four; they are 2.x's defaults, set explicitly rather than trusted).
_COMMON_ENV: Mapping[str, str] = {
    "N8N_DIAGNOSTICS_ENABLED": "false",
    "N8N_PERSONALIZATION_ENABLED": "false",
    "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
    "N8N_SECURE_COOKIE": "false",  # plain http on loopback
    "N8N_BLOCK_ENV_ACCESS_IN_NODE": "true",
    "DB_SQLITE_POOL_SIZE": "2",  # the pooled SQLite driver (2.x's only one)
    "N8N_GIT_NODE_DISABLE_BARE_REPOS": "true",
    "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "true",
}
_V1_ENV: Mapping[str, str] = {"N8N_RUNNERS_ENABLED": "true"}  # always on in 2.x (and removed)
# 2.x on top (n8n's 2.0 breaking changes, set explicitly rather than trusted as defaults).
_V2_ENV: Mapping[str, str] = {
    "N8N_RUNNERS_MODE": "internal",  # see above (2.41 logs that internal mode is deprecated)
    "NODES_EXCLUDE": json.dumps(list(EXCLUDED_NODES)),
    "N8N_BLOCK_FILE_ACCESS_TO_N8N_FILES": "true",
    "N8N_SKIP_AUTH_ON_OAUTH_CALLBACK": "false",
    # outside look-ups 2.x makes unless told not to: n8n's template library, banners, the
    # community-node registry (Zixly's own nodes load from N8N_CUSTOM_EXTENSIONS, not as
    # community packages), the MCP server registry
    "N8N_TEMPLATES_ENABLED": "false",
    "N8N_DYNAMIC_BANNERS_ENABLED": "false",
    "N8N_HIRING_BANNER_ENABLED": "false",
    "N8N_COMMUNITY_PACKAGES_ENABLED": "false",
    "N8N_VERIFIED_PACKAGES_ENABLED": "false",
    "N8N_UNVERIFIED_PACKAGES_ENABLED": "false",
    "N8N_DISABLED_MODULES": "mcp-registry",
}


@dataclass(frozen=True)
class N8nLine:
    """One n8n version and what it needs; ``line("2.41.1").publishes`` and so on."""

    version: str
    major: int
    minor: int

    @property
    def node_major(self) -> int:
        """The Node major the install and the image use (2.x needs Node >= 24)."""
        return 24 if self.major >= 2 else 22

    @property
    def ignore_install_scripts(self) -> bool:
        """Install with ``--ignore-scripts``, then rebuild only the native modules n8n needs."""
        return self.major >= 2

    @property
    def owner_from_env(self) -> bool:
        """The owner is set by ``N8N_INSTANCE_OWNER_*`` at every start (n8n 2.17+)."""
        return (self.major, self.minor) >= (2, 17)

    @property
    def publishes(self) -> bool:
        """Activation publishes a version; webhooks register shortly after (2.x)."""
        return self.major >= 2


def line(version: str) -> N8nLine:
    match = _NUMBERS.match(version)
    if match is None:
        raise ValueError(f"not an n8n version: {version!r}")
    return N8nLine(version, int(match.group(1)), int(match.group(2)))


def instance_env(version: str, *, user_folder: str) -> dict[str, str]:
    """The environment every instance of ``version`` gets (before the spec's own env).

    ``user_folder`` is ``N8N_USER_FOLDER`` as the instance sees it (inside a container, the
    container's path): 2.x's file nodes may use its ``files/`` folder only.
    """
    if line(version).major < 2:
        return {**_COMMON_ENV, **_V1_ENV}
    files = f"{user_folder.rstrip('/')}/{FILES_FOLDER}"
    return {**_COMMON_ENV, **_V2_ENV, "N8N_RESTRICT_FILE_ACCESS_TO": files}


def webhook_env(version: str, url: str) -> dict[str, str]:
    """Where the instance's webhooks are reached (2.x: ``N8N_WEBHOOK_URL``; 2.41 calls
    ``WEBHOOK_URL`` deprecated; 1.x knows only ``WEBHOOK_URL``)."""
    return {("N8N_WEBHOOK_URL" if line(version).major >= 2 else "WEBHOOK_URL"): url}


__all__ = [
    "CURRENT_N8N_VERSION",
    "EXCLUDED_NODES",
    "LEGACY_N8N_VERSION",
    "SUPPORTED_N8N_VERSIONS",
    "N8nLine",
    "instance_env",
    "line",
    "webhook_env",
]
