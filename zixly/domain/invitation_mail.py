"""The invitation mail: a link to ``<public_url>/invitations/accept?token=...``, sent through
the alert email channel's SMTP after the invitation is committed.

A failed delivery is logged (never the link: it carries the secret) and does not change the
answer to the inviting ADMIN, who may invite the email again for a new link.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from zixly.alerts.channels import SmtpChannel
from zixly.alerts.errors import AlertDeliveryError
from zixly.core.logging import get_logger
from zixly.core.settings import Settings
from zixly.domain.invitations import IssuedInvitation

# Where an invitation's link lands (``zixly.http.invitation_page`` serves it).
PATH = "/invitations/accept"
log = get_logger("zixly.invitations")


def accept_link(settings: Settings, token: str) -> str:
    return f"{settings.base_url.rstrip('/')}{PATH}?{urlencode({'token': token})}"


def invitation_text(link: str, tenant_name: str, role: str, expires_at: datetime) -> str:
    return "\n".join(
        [
            f"You are invited to join {tenant_name} on Zixly as {role}.",
            "",
            "To accept, sign in to Zixly with this email address and open:",
            link,
            "",
            f"The link works once and expires at {expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC.",
            "If you did not expect this invitation, ignore this email: nothing changes "
            "unless you accept.",
        ]
    )


async def send_invitation(settings: Settings, issued: IssuedInvitation) -> bool:
    """Mail the invitation; False (logged) when it could not be delivered."""
    row = issued.row
    body = invitation_text(
        accept_link(settings, issued.token), issued.tenant_name, row.role, row.expires_at
    )
    try:
        await SmtpChannel.from_settings(settings).send_text(
            [row.email], f"Invitation to {issued.tenant_name} on Zixly", body
        )
    except AlertDeliveryError as exc:
        log.warning("invitation.mail_failed", invitation_id=str(row.id), reason=exc.message)
        return False
    return True
