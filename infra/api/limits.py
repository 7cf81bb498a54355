"""Bodies over the limit: refused as problem+json, and the connection closed behind the answer.

FastAPI's max_body_size counts a body as it arrives and answers a plain-text 413. Two things are
ours: the answer is a problem like every other refusal, and any answer given before the request's
body has all arrived (a 413, a 401, a 404) says `Connection: close`, so that the server drops the
socket instead of reading and discarding the rest of a 600 MB upload from a client that does not
stop sending when answered early (curl does not).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.api.problems import MEDIA_TYPE, problem_body


def _body(limit: int | None) -> bytes:
    detail = "the request body is larger than this route takes" + (f" ({limit:,} bytes)" if limit else "")
    return json.dumps(problem_body(413, "Content too large", detail, "body-size",
                                   [{"field": "body", "message": detail}])).encode()  # fmt: skip


class TooLarge:
    """Outermost: rewrites any 413 into problem+json with Connection: close."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False
        headers = dict(scope["headers"])
        body_ended = headers.get(b"content-length", b"0") == b"0" and b"transfer-encoding" not in headers

        async def receive_counting() -> Message:
            nonlocal body_ended
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_ended = True
            return message

        async def send_problem(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] != 413 and not body_ended:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            if message["type"] == "http.response.start" and message["status"] == 413:
                rewriting = True
                # The limit that refused it: a route's own (uploads, imports) is set on the responder the
                # app-level limit installed in this scope; the scope key itself is the app's.
                responder = scope.get("starlette._body_limit_responder")
                body = _body(getattr(responder, "max_body_size", None) or scope.get("starlette.max_body_size"))
                headers: list[Any] = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                                      (b"connection", b"close")]  # fmt: skip
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            if rewriting:
                return  # the original plain-text body is dropped
            await send(message)

        await self.app(scope, receive_counting, send_problem)


class Outermost(FastAPI):
    """FastAPI whose stack sits inside TooLarge: the app-wide body limit is outside any middleware
    added the usual way."""

    def build_middleware_stack(self) -> ASGIApp:
        return TooLarge(super().build_middleware_stack())
