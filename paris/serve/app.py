"""The HTTP face of the engine: a web page, OpenAI's images API, and a run's training artefacts.

    GET  /                          the page (paris/serve/page.html)
    POST /v1/images/generations     OpenAI-compatible: prompt, n, size, response_format (b64_json | url), model;
                                    paris's own fields: strategy, steps, guidance, seed, lora_scale ("K=S,...")
    GET  /v1/models                 the one model served
    GET  /healthz                   liveness, queue length, batches sampled, whether a key is needed, the experts
                                    resident and their bytes
    POST /api/jobs, GET /api/jobs/ID   the page's requests: queued at once, polled for progress
    GET  /images/JOB/I.png          a finished image
    GET  /api/info, /api/run/PATH   what the page shows: settings, and a run's previews, loss curves, montages

A bad request gets a 4xx with OpenAI's error shape, {"error": {"message", "type", "param", "code"}}, and fails
no other request: 400 for a value out of its range or of the wrong type, 404 for an unknown model or job, 413 for
a body over --max-body-bytes, 429 with a Retry-After header when --max-queue jobs wait. A client that goes away
cancels its job. With an API key every route but /, /healthz and the image URLs (unguessable, as OpenAI's are)
wants `Authorization: Bearer KEY`. Each request is one line of the `paris.serve` logger (paris.serve.middleware).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from paris.errors import ParisError, cut, shown
from paris.run import RunDir
from paris.serve.middleware import AccessLog, RequireKey
from paris.serve.engine import Engine, Job, QueueFull
from paris.serve.run_files import run_file, run_files

PAGE = Path(__file__).with_name("page.html")
# OpenAI's request fields that change nothing here: accepted and ignored, so its clients work unchanged.
OPENAI_IGNORED = {"model", "quality", "style", "user", "background", "moderation", "output_compression"}
PARIS_FIELDS = {"strategy": "strategy", "steps": "steps", "guidance": "guidance", "seed": "seed",
                "lora_scale": "lora_scale"}
MAX_BODY_BYTES = 1 << 20  # paris serve --max-body-bytes
DISCONNECT_CHECK_SECONDS = 0.25  # how often a waiting request looks whether its client is still there


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers


def create_app(engine: Engine, model_name: str, run: RunDir | None = None, api_key: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, log_prompts: bool = False) -> FastAPI:
    app = FastAPI(title="paris", docs_url=None, redoc_url=None, openapi_url=None)
    size = image_size(engine)
    app.state.max_body_bytes = max_body_bytes

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return _error_response(error)

    @app.exception_handler(HTTPException)  # starlette's own: an unknown route, a method a route does not take
    async def http_error(request: Request, error: HTTPException):
        return _error_response(RequestError(error.status_code, str(error.detail), kind="not_found"
                                            if error.status_code == 404 else "invalid_request_error"))

    @app.exception_handler(RequestValidationError)  # a path parameter of the wrong type: /images/JOB/x.png
    async def validation_error(request: Request, error: RequestValidationError):
        return _error_response(RequestError(404, f"no such resource: {cut(request.url.path)}", kind="not_found"))

    @app.get("/healthz")
    async def health():
        return {"status": "ok", "queued": len(engine.waiting), "batches": engine.batches, "auth": bool(api_key),
                **resident_experts(engine)}

    _add_openai_routes(app, engine, model_name, size)
    _add_page_routes(app, engine, model_name, size, run)
    if api_key:
        app.add_middleware(RequireKey, api_key=api_key)
    app.add_middleware(AccessLog, log_prompts=log_prompts)  # added last: outermost, it logs the 401s too
    return app


def _error_response(error: RequestError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _add_openai_routes(app: FastAPI, engine: Engine, model_name: str, size: str) -> None:
    """OpenAI's images API, so that its clients work unchanged."""

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "paris"}]}

    @app.post("/v1/images/generations")
    async def images(request: Request):
        body = await _json(request)
        if body.get("model") not in (None, model_name):
            raise RequestError(404, f"the model {shown(body['model'])} does not exist; this server serves "
                                    f"{model_name!r} (GET /v1/models)", "model", code="model_not_found")
        response_format = _response_format(body, size)
        job = await _finished(engine, _submit(engine, body, request), request)
        if response_format == "b64_json":
            data = [{"b64_json": base64.b64encode(png).decode(), "revised_prompt": prompt}
                    for png, prompt in zip(job.images, job.prompts)]
        else:
            base = str(request.base_url).rstrip("/")
            data = [{"url": f"{base}/images/{job.id}/{i}.png", "revised_prompt": prompt}
                    for i, prompt in enumerate(job.prompts)]
        return {"created": int(job.submitted), "data": data, "paris": job.summary() | {"routing": None}}


def _response_format(body: dict, size: str) -> str:
    """How an images request wants its images back (url or b64_json), once its fields are checked: a request this
    server would not draw as asked is refused rather than drawn otherwise."""
    unknown = sorted(set(body) - OPENAI_IGNORED - set(PARIS_FIELDS) - {"prompt", "n", "size", "response_format"})
    if unknown:
        raise RequestError(400, f"unknown field(s) {cut(', '.join(unknown))}; this server takes prompt, n, size, "
                                f"response_format and paris's {', '.join(PARIS_FIELDS)}", cut(unknown[0]))
    if body.get("size", "auto") not in ("auto", size):
        raise RequestError(400, f"size must be {size} (the only size this model draws) or auto, got "
                                f"{shown(body['size'])}", "size")
    response_format = body.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        raise RequestError(400, f"response_format must be url or b64_json, got {shown(response_format)}",
                           "response_format")
    return response_format


def _add_page_routes(app: FastAPI, engine: Engine, model_name: str, size: str, run: RunDir | None) -> None:
    """The web page, the jobs it queues and polls, their images, and what it shows of the run."""

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE.read_text()

    @app.post("/api/jobs")
    async def submit(request: Request):
        body = await _json(request)
        prompt = body.get("prompt")
        if isinstance(prompt, str):  # the page's text box: a prompt per line (only blank ones: refused as blank)
            prompt = [line for line in prompt.splitlines() if line.strip()] or prompt
        return _submit(engine, {**body, "prompt": prompt}, request).summary()

    @app.get("/api/jobs/{job_id}")
    async def job_status(job_id: str):
        return _job(engine, job_id).summary()

    @app.get("/images/{job_id}/{index}.png")
    async def image(job_id: str, index: int):
        job = _job(engine, job_id)
        if not 0 <= index < len(job.images):
            raise RequestError(404, f"job {job_id} has no image {index}", kind="not_found")
        return Response(job.images[index], media_type="image/png")

    @app.get("/api/info")
    async def info():
        return {"model": model_name, "num_experts": engine.num_experts, "size": size,
                "sample": dataclasses.asdict(engine.pipe.sample), "max_steps": engine.max_steps,
                "max_images": engine.max_images, "run_files": run_files(run) if run is not None else None,
                **resident_experts(engine)}

    @app.get("/api/run/{path:path}")
    async def shown_run_file(path: str):
        data = None if run is None else run_file(run, path)
        if data is None:
            raise RequestError(404, f"no {cut(path)} to show", kind="not_found")
        kind = {"png": "image/png", "json": "application/json", "md": "text/markdown"}[path.rsplit(".", 1)[1]]
        return Response(data, media_type=kind)


def resident_experts(engine: Engine) -> dict:
    """What the experts hold on the device now: how many are loaded, their bytes (int8 ones as stored), how held."""
    pool = engine.pipe.mixture.experts
    return {"resident_experts": len(pool.resident), "resident_expert_bytes": pool.resident_bytes,
            "quantize": pool.quantize}


def image_size(engine: Engine) -> str:
    """"WxH" of the images the pipeline draws (the SD VAE decodes 8x the latent size)."""
    config = engine.pipe.config
    scale = 8 if config["autoencoder"] == "sd-vae" else 1
    _, height, width = config["latent_shape"]
    return f"{width * scale}x{height * scale}"


def _submit(engine: Engine, body: dict, request: Request) -> Job:
    """Queue the request's job (n left out or null: 1), and note for the access log what it queued."""
    settings = {name: body.get(field) for field, name in PARIS_FIELDS.items()}
    n = 1 if body.get("n") is None else body["n"]
    try:
        job = engine.submit(body.get("prompt"), n, **settings)
    except ParisError as e:
        raise RequestError(400, str(e), e.key and e.key.rsplit(".", 1)[-1]) from None
    except QueueFull as e:
        raise RequestError(429, str(e), kind="requests", code="rate_limit_exceeded",  # OpenAI's words for it
                           headers={"Retry-After": str(e.retry_after)}) from None
    request.state.images, request.state.prompts = len(job.prompts), job.prompts
    return job


async def _finished(engine: Engine, job: Job, request: Request) -> Job:
    """The job, once sampled; cancelled if its client goes away first (nobody would get its images)."""
    done = asyncio.wrap_future(job.finished)
    while not done.done():
        await asyncio.wait({done}, timeout=DISCONNECT_CHECK_SECONDS)
        if not done.done() and await request.is_disconnected():
            engine.cancel(job)
            raise RequestError(499, "the client went away before its images were drawn", kind="client_closed")
    if job.status == "failed":
        raise RequestError(500, f"sampling failed: {job.error}", kind="server_error")
    return job


def _job(engine: Engine, job_id: str) -> Job:
    job = engine.get(job_id)
    if job is None:
        raise RequestError(404, f"no job {job_id} (finished jobs are kept for a while, then dropped)",
                           kind="not_found")
    return job


async def _json(request: Request) -> dict:
    """The body, a JSON object of at most max_body_bytes: a longer one is refused unread (413) as soon as its
    Content-Length or its bytes so far show it."""
    limit = request.app.state.max_body_bytes
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise _too_large(limit)
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, an int of 5,000 digits, [[[...]]] nested too deep
        raise RequestError(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return body


def _too_large(limit: int) -> RequestError:
    return RequestError(413, f"the request body is over {limit:,} bytes, the most this server takes "
                             "(paris serve --max-body-bytes)", code="request_too_large")
