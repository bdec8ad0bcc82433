"""The HTTP face of the engine: a web page, OpenAI's images API, and a run's training artefacts.

    GET  /                          the page (paris/serve/page.html)
    POST /v1/images/generations     OpenAI-compatible: prompt, n, size, response_format (b64_json | url), model;
                                    paris's own fields: strategy, steps, guidance, seed
    GET  /v1/models                 the one model served
    GET  /healthz                   liveness, queue length, batches sampled, whether a key is needed
    POST /api/jobs, GET /api/jobs/ID   the page's requests: queued at once, polled for progress
    GET  /images/JOB/I.png          a finished image
    GET  /api/info, /api/run/PATH   what the page shows: settings, and a run's previews, loss curves, montages

A bad request gets a 4xx with OpenAI's error shape, {"error": {"message", "type", "param", "code"}}; the
server keeps serving. With an API key every route but /, /healthz and the image URLs (unguessable, as
OpenAI's are) wants `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from paris.errors import ParisError
from paris.run import RunDir
from paris.serve.engine import Engine, Job
from paris.serve.run_files import RUN_FILES, run_files

PAGE = Path(__file__).with_name("page.html")
# OpenAI's request fields that change nothing here: accepted and ignored, so its clients work unchanged.
OPENAI_IGNORED = {"model", "quality", "style", "user", "background", "moderation", "output_compression"}
PARIS_FIELDS = {"strategy": "strategy", "steps": "steps", "guidance": "guidance", "seed": "seed"}


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def create_app(engine: Engine, model_name: str, run: RunDir | None = None, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="paris", docs_url=None, redoc_url=None, openapi_url=None)
    size = image_size(engine)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        body = {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": None}}
        return JSONResponse(body, status_code=error.status)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        # An image URL is a capability (an unguessable job id), as OpenAI's are: an <img> sends no header.
        public = request.url.path in ("/", "/healthz") or request.url.path.startswith("/images/")
        if api_key and not public and request.headers.get("authorization") != f"Bearer {api_key}":
            body = {"error": {"message": "a valid API key is needed: send `Authorization: Bearer KEY`",
                              "type": "invalid_api_key", "param": None, "code": "invalid_api_key"}}
            return JSONResponse(body, status_code=401)
        return await call_next(request)

    @app.get("/healthz")
    async def health():
        return {"status": "ok", "queued": len(engine.waiting), "batches": engine.batches, "auth": bool(api_key)}

    _add_openai_routes(app, engine, model_name, size)
    _add_page_routes(app, engine, model_name, size, run)
    return app


def _add_openai_routes(app: FastAPI, engine: Engine, model_name: str, size: str) -> None:
    """OpenAI's images API, so that its clients work unchanged."""

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "paris"}]}

    @app.post("/v1/images/generations")
    async def images(request: Request):
        body = await _json(request)
        response_format = _response_format(body, size)
        job = await _finished(_submit(engine, body, body.get("n", 1)))
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
        raise RequestError(400, f"unknown field(s) {', '.join(unknown)}; this server takes prompt, n, size, "
                                f"response_format and paris's {', '.join(PARIS_FIELDS)}", unknown[0])
    if body.get("size", "auto") not in ("auto", size):
        raise RequestError(400, f"size must be {size} (the only size this model draws) or auto, got "
                                f"{body['size']!r}", "size")
    response_format = body.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        raise RequestError(400, f"response_format must be url or b64_json, got {response_format!r}",
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
        prompts = [line for line in str(body.get("prompt", "")).splitlines() if line.strip()]
        return _submit(engine, {**body, "prompt": prompts}, body.get("n", 1)).summary()

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
                "max_images": engine.max_images, "run_files": run_files(run) if run is not None else None}

    @app.get("/api/run/{path:path}")
    async def run_file(path: str):
        if run is None or not RUN_FILES.fullmatch(path) or not run.exists(path):
            raise RequestError(404, f"no {path} to show", kind="not_found")
        kind = {"png": "image/png", "json": "application/json", "md": "text/markdown"}[path.rsplit(".", 1)[1]]
        return Response(run.read_bytes(path), media_type=kind)


def image_size(engine: Engine) -> str:
    """"WxH" of the images the pipeline draws (the SD VAE decodes 8x the latent size)."""
    config = engine.pipe.config
    scale = 8 if config["autoencoder"] == "sd-vae" else 1
    _, height, width = config["latent_shape"]
    return f"{width * scale}x{height * scale}"


def _submit(engine: Engine, body: dict, n) -> Job:
    settings = {name: body.get(field) for field, name in PARIS_FIELDS.items()}
    try:
        return engine.submit(body.get("prompt"), n, **settings)
    except ParisError as e:
        raise RequestError(400, str(e)) from None


async def _finished(job: Job) -> Job:
    await asyncio.wrap_future(job.finished)
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
    try:
        body = await request.json()
    except ValueError:
        raise RequestError(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return body
