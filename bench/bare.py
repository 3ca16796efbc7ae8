"""The baseline: a bare starlette endpoint that parses the JSON body and answers 202."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def notifications(request: Request) -> Response:
    json.loads(await request.body())
    return Response(status_code=202)


app = Starlette(routes=[Route("/graph/notifications", notifications, methods=["POST"])])
