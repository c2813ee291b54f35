"""The http-01 challenge answers (RFC 8555 §8.3) at /.well-known/acme-challenge/TOKEN.

The key authorizations come from `ChallengeFiles`: the server's own orders fill its memory,
`postroom acme renew` its directory (read on a worker thread). An unknown or malformed token
is 404; the answer is the key authorization alone, as the CA compares it byte for byte.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.net.certificates import ChallengeFiles


def routes(challenges: ChallengeFiles) -> list[BaseRoute]:
    async def challenge(request: Request) -> Response:
        token = str(request.path_params["token"])
        answer = challenges.cached(token)
        if answer is None:
            answer = await asyncio.to_thread(challenges.answer, token)
        if answer is None:
            return PlainTextResponse("No such challenge.\n", status_code=404)
        # RFC 8555 §8.3: the body is the key authorization, served as application/octet-stream.
        return Response(answer.encode("ascii"), media_type="application/octet-stream")

    return [Route("/.well-known/acme-challenge/{token}", challenge, methods=["GET", "HEAD"])]
