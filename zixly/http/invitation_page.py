"""``GET /invitations/accept``: where an invitation mail's link lands.

The page only tells the invitee what to do; it reflects nothing from the request (the
token stays in the address bar, sent nowhere: no-store, no referrer, nothing loaded).
Accepting is the authenticated ``acceptInvitation`` mutation.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zixly.domain.invitation_mail import PATH
from zixly.http.oauth_callback import message_page


async def invitation_landing(_request: Request) -> Response:
    return message_page(
        200,
        "You are invited to Zixly",
        "Sign in to Zixly with the email address this invitation was sent to, then accept it "
        "(the acceptInvitation mutation, with the token from this link). The link expires; "
        "ask the person who invited you for a new one if it no longer works.",
    )


def invitation_routes() -> list[Route]:
    return [Route(PATH, invitation_landing, methods=["GET"])]
