"""Where an alert webhook may post: public addresses, checked where the socket connects.

A tenant ADMIN chooses the webhook URL and Zixly's worker posts to it from inside Zixly's
network. Unchecked, that is a request forgery into this machine and its neighbours: every
tenant's n8n listens on a loopback port with fixed, unauthenticated webhook paths, and a
cloud's metadata service answers on 169.254.169.254. So:

* saving a URL refuses what can be judged without DNS: a scheme other than https (http only
  to loopback, where loopback is allowed), an IP literal outside the public address space
  in any spelling a resolver accepts (``2130706433``, ``0x7f.1``, ``127.1``,
  ``[::ffff:127.0.0.1]``, NAT64 and 6to4 forms), and ``localhost`` names;
* delivering resolves the host, refuses it when any of its addresses is not public (a name
  can point anywhere, and can change after it was saved) and connects to the address it
  checked, with the URL's own host name for TLS and the Host header, so DNS cannot answer
  differently between the check and the connection. The channel follows no redirect.

Loopback is allowed only with ``ZIXLY_ALERT_WEBHOOK_ALLOW_LOOPBACK`` (a local receiver in
development and tests). No message names the URL or its host: the URL carries a token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from zixly.alerts.errors import AlertDeliveryError
from zixly.core.errors import ValidationError
from zixly.core.settings import Settings
from zixly.security.crypto import Secret

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches (mapped, compatible, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_loopback(address: Address) -> bool:
    return (_embedded_ipv4(address) or address).is_loopback


def _is_public(address: Address) -> bool:
    reached = _embedded_ipv4(address) or address
    return reached.is_global and not reached.is_multicast


def _literal(host: str) -> Address | None:
    """``host`` as the address a resolver would read it as, or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:  # the forms inet_aton (and so getaddrinfo) accepts: 2130706433, 0x7f.1, 127.1
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _loopback_name(host: str) -> bool:
    host = host.rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


@dataclass(frozen=True)
class Pinned:
    """A request to the checked address that still speaks to the URL's host."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookTargets:
    allow_loopback: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookTargets:
        return cls(allow_loopback=settings.alert_webhook_allow_loopback)

    def check(self, url: Secret) -> None:
        """Saving: refuse what is wrong without asking DNS (ValidationError on webhookUrl).
        Plain http only to loopback: elsewhere the URL's token and every notice would cross
        the network in the clear."""
        try:
            parts = urlsplit(url.reveal())
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            httpx.URL(url.reveal())
        except (ValueError, httpx.InvalidURL) as exc:
            raise ValidationError("the webhook URL is not a valid URL", field="webhookUrl") from exc
        if parts.scheme not in ("https", "http") or not host:
            raise ValidationError("the webhook URL must be an http(s) URL", field="webhookUrl")
        address = _literal(host)
        local = _loopback_name(host) or (address is not None and _is_loopback(address))
        if local and not self.allow_loopback:
            raise ValidationError(
                "the webhook URL must not point at Zixly's own machine", field="webhookUrl"
            )
        if address is not None and not local and not _is_public(address):
            raise ValidationError(
                "the webhook URL must be a public address, not a private, link-local or "
                "reserved one",
                field="webhookUrl",
            )
        if parts.scheme == "http" and not local:
            raise ValidationError(
                "the webhook URL must use https (http only to localhost)", field="webhookUrl"
            )

    async def pin(self, url: str) -> Pinned:
        """Delivering: the URL with its host resolved to an address this policy allows."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise AlertDeliveryError(
                "the webhook URL is not a valid URL", channel="webhook"
            ) from exc
        if parsed.scheme not in ("https", "http") or not parsed.raw_host:
            raise AlertDeliveryError("the webhook URL must be an http(s) URL", channel="webhook")
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise AlertDeliveryError(
                "the webhook's host name does not resolve", channel="webhook"
            ) from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
        if not addresses or not all(self._allowed(a, parsed.scheme) for a in addresses):
            raise AlertDeliveryError(
                "the webhook's host is not a public address; nothing was sent",
                channel="webhook",
            )
        extensions = {} if _literal(host) else {"sni_hostname": host}
        # Connection: close, since a pool keyed by address could otherwise hand this TLS
        # connection (verified for this host name) to another name at the same address.
        headers = {"Host": parsed.netloc.decode("ascii"), "Connection": "close"}
        return Pinned(parsed.copy_with(host=str(addresses[0])), headers, extensions)

    def _allowed(self, address: Address, scheme: str) -> bool:
        if _is_loopback(address):
            return self.allow_loopback
        return scheme == "https" and _is_public(address)
