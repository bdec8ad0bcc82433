"""What every HTTP request goes through before and after its route: the API key check, and one line on the
`paris.serve` logger at info level (method, path, status, seconds, the images it queued; with `paris serve
--log-prompts`, its prompts too: off by default, prompts may be private).

Both are plain ASGI middleware, not Starlette's BaseHTTPMiddleware, which wraps `receive` so that a route can no
longer see its client go away (the images route cancels the job of a client that left)."""

from __future__ import annotations

import hmac
import json
import logging
import time

from fastapi.responses import JSONResponse

log = logging.getLogger("paris.serve")
SHOWN_PATH = 200  # characters of a path written to the log: a client chooses it, and its length


class RequireKey:
    """With an API key, every route but the page, /healthz and the image URLs wants `Authorization: Bearer KEY`.
    An image URL is a capability (an unguessable job id), as OpenAI's are: an <img> sends no header."""

    def __init__(self, app, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        public = path in ("/", "/healthz") or path.startswith("/images/")
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if scope["type"] == "http" and not public and not hmac.compare_digest(given, self.expected):
            body = {"error": {"message": "a valid API key is needed: send `Authorization: Bearer KEY`",
                              "type": "invalid_api_key", "param": None, "code": "invalid_api_key"}}
            return await JSONResponse(body, status_code=401)(scope, receive, send)
        return await self.app(scope, receive, send)


class AccessLog:
    """Around the whole app, so that refusals (401, 413, 404) are logged as well. A route notes what its request
    queued in the request's state (`request.state.images`, `.prompts`); a request whose route raised is logged
    as the 500 the server answered."""

    def __init__(self, app, log_prompts: bool = False):
        self.app, self.log_prompts = app, log_prompts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]  # 500 unless a response starts: an error escaped
        state = scope.setdefault("state", {})

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("%s", self.line(scope, status[0], time.perf_counter() - started, state))

    def line(self, scope, status: int, seconds: float, state: dict) -> str:
        path = repr(scope["path"])[1:-1][:SHOWN_PATH]  # escaped: a newline in a URL cannot forge a log line
        line = f"{scope['method']} {path} {status} {seconds:.3f} s {state.get('images', 0)} images"
        if self.log_prompts and state.get("prompts"):
            line += " prompts " + json.dumps(state["prompts"], ensure_ascii=False)
        return line
