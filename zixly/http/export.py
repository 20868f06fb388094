"""CSV export of financials, streamed from a server-side cursor."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response


async def export_financials_csv(request: Request) -> Response:
    raise NotImplementedError  # replaced below in this change
