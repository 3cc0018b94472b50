"""The FastAPI application: middleware (body limit, CORS, security headers), API-key checks,
uniform errors, the web page, and the routes every plugin adds through ``register_routes``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from sigerlm_serving.errors import ApiError, error_body
from sigerlm_serving.service import AppState, key_id
from sigerlm_serving.settings import ServeSettings, settings_from_env

log = logging.getLogger("sigerlm.serving")
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "body_timeout",
    411: "length_required",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}
PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


class BodyLimit:
    """413 for a request body over ``max_bytes`` (by Content-Length, or counted as it arrives);
    408 for a body that has not fully arrived ``timeout_s`` after the request began."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float = 30.0):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                return await _send_json(send, 400, error_body(400, "bad_content_length", "invalid Content-Length"))
            if too_big:
                return await _send_json(send, 413, error_body(413, "body_too_large", self._message()))
        seen, complete = 0, False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def limited() -> Any:
            nonlocal seen, complete
            if complete:  # the body is in: later reads wait for a disconnect, without a deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                raise StarletteHTTPException(
                    408, f"the request body did not arrive within {self.timeout_s:g} s"
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, self._message())
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the request body is larger than this server's limit of {self.max_bytes} bytes"


async def _send_json(send: Any, status: int, body: dict) -> None:
    import json

    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _matches(keys: list[bytes], candidate: bytes) -> bool:
    ok = False
    for key in keys:  # compare with every key, in constant time each
        ok |= hmac.compare_digest(key, candidate)
    return ok


def _auth_dependency(state: AppState) -> Any:
    keys = [k.encode() for k in state.settings.api_keys]
    reviewer_keys = [k.encode() for k in state.settings.reviewer_keys]

    async def check_api_key(request: Request) -> None:
        """``X-Siger-API-Key: KEY`` or ``Authorization: Bearer KEY`` when the server has keys.
        Sets ``request.state.siger_key`` (a key id, or the client's address without keys) and
        ``siger_role`` (``reviewer`` for a reviewer key, else ``client``)."""
        given = request.headers.get("x-siger-api-key")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        candidate = (given or "").encode()
        if given and reviewer_keys and _matches(reviewer_keys, candidate):
            request.state.siger_key, request.state.siger_role = key_id(given), "reviewer"
            return
        request.state.siger_role = "client"
        if not keys:  # no API keys: anyone may call; any other key sent is ignored
            request.state.siger_key = "client-" + (request.client.host if request.client else "unknown")
            return
        if not given:
            raise ApiError(
                401, "missing_api_key", "this server needs an API key: send X-Siger-API-Key or Authorization: Bearer"
            )
        if not _matches(keys, candidate):
            raise ApiError(401, "invalid_api_key", "the API key is not valid")
        request.state.siger_key = key_id(given)

    return check_api_key


def create_app(settings: ServeSettings, plugin_manager: Any = None, model: Any = None) -> FastAPI:
    """Load the model and the store, collect every plugin's routes, and return the app."""
    from sigerlm.plugins import make_plugin_manager

    if plugin_manager is None:
        plugin_manager = make_plugin_manager()
    from sigerlm_serving import hooks as serving_hooks
    from sigerlm_text import hooks as text_hooks

    # the server needs its own routes and the text adapter (the models it serves), whatever else was loaded
    for name, module, distribution in (
        ("text", text_hooks, "sigerlm-text"),
        ("serving", serving_hooks, "sigerlm-serving"),
    ):
        if name not in plugin_manager.records or not plugin_manager.records[name].loaded:
            from sigerlm.plugins import PluginRecord

            record = PluginRecord(name, module.__name__, distribution=distribution)
            if not plugin_manager.load_module(module, name, record):
                raise RuntimeError(f"the {name} plugin could not be registered: {record.error}")
    state = AppState(settings, plugin_manager, model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    app = FastAPI(
        title="SigerLM",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # /docs only with settings.docs (below), with its own CSP; no ReDoc
        redoc_url=None,
        description=f"The SigerLM HTTP API serving {state.identity}. Errors are "
        '`{"error": {"code", "message", "type"}}`.',
    )
    app.state.siger = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body(400, "malformed_json", "the request body is not valid JSON"), 400)
        if any(
            tuple(e.get("loc", ())) == ("body",)
            and e.get("type") in ("model_attributes_type", "dict_type", "model_type")
            for e in errors
        ):
            return JSONResponse(error_body(400, "malformed_json", "the request body must be a JSON object"), 400)
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors]
        summary = "; ".join(f"{'.'.join(d['loc'][1:] or d['loc'])}: {d['msg']}" for d in details[:5])
        return JSONResponse(error_body(422, "invalid_request", summary or "invalid request", details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 400 and "parsing the body" in message:
            message, code = "the request body could not be read", "bad_body"
        return JSONResponse(error_body(exc.status_code, code, message), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(500, "internal_error", "internal server error"), 500)

    # open: health, the page and its files
    @app.get("/health", tags=["status"])
    def health() -> dict[str, str]:
        return {"status": "ok", "model": state.identity}

    static = resources.files("sigerlm_serving") / "static"

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    if settings.docs:
        _add_docs(app)

    # every plugin's routes (this plugin's /v1 API included), behind the API-key check
    router = APIRouter(dependencies=[Depends(_auth_dependency(state))])
    plugin_manager.hook.register_routes(router=router, app_state=state)
    app.include_router(router)

    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Content-Type", "Authorization", "X-Siger-API-Key"],
        max_age=600,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    return app


SWAGGER_CDN = "https://cdn.jsdelivr.net"


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs: its script and style from the CDN FastAPI uses (the only thing the
    page may load from elsewhere), its inline start-up script allowed by its hash, nothing else."""
    import re

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    html = get_swagger_ui_html(
        openapi_url="/openapi.json", title="SigerLM API", swagger_favicon_url="data:,"
    ).body.decode()
    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'" for script in inline
    )
    headers = {
        **PAGE_HEADERS,
        "Content-Security-Policy": f"default-src 'none'; script-src {SWAGGER_CDN} {hashes}; "
        f"style-src {SWAGGER_CDN}; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
    }

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)


def create_app_from_env() -> FastAPI:
    """The uvicorn factory ``siger serve`` runs in each worker."""
    return create_app(settings_from_env())


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sigerlm-serving")
    except metadata.PackageNotFoundError:
        return "0"
