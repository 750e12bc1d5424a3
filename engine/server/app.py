"""The FastAPI application: settings, the token check, error answers, and the routes' shared state."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.catalog import OutsideGalleryError
from engine.core import Engine
from engine.errors import NotFoundError, TansakuError
from engine.jobs import ForbiddenPathError, JobConflictError, JobManager
from engine.uploads import MAX_BYTES, MAX_PIXELS, UploadError
from engine.visual import thumbnail
from indexer.describe import Description
from matcher.rerank import RerankConf

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
TOKEN_COOKIE = "tansaku_token"


@dataclass(frozen=True)
class ServerConfig:
    """What `tansaku serve` was started with."""

    allow_roots: tuple[Path, ...] = ()
    token: str | None = None
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    recent_queries: int = 64  # queries remembered for their match views
    preload: bool = False  # open every gallery when the server starts, not at its first query


@dataclass
class RecentQuery:
    """A query answered lately: what its match views need."""

    id: str
    gallery: str
    pixels: np.ndarray  # the query image, longer side at most KEPT_SIDE
    scale: float  # of `pixels` against the image the description's keypoints refer to
    description: Description
    conf: RerankConf | None


KEPT_SIDE = 1024  # queries are kept this small for match views (a 40 MP upload would be 120 MB)


@dataclass
class QueryMemory:
    """The last `size` queries by id (their pixels and descriptions), for match views."""

    size: int
    _items: OrderedDict[str, RecentQuery] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, gallery: str, pixels: np.ndarray, description: Description,
            conf: RerankConf | None) -> str:
        """Remember a query; returns its id."""
        small = thumbnail(pixels, KEPT_SIDE)
        query = RecentQuery(uuid.uuid4().hex, gallery, small, small.shape[0] / pixels.shape[0],
                            description, conf)
        with self._lock:
            self._items[query.id] = query
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return query.id

    def get(self, query_id: str) -> RecentQuery:
        """A remembered query; NotFoundError once it has been forgotten."""
        with self._lock:
            query = self._items.get(query_id)
        if query is None:
            raise NotFoundError(f"query {query_id!r} is not (or no longer) remembered; query again")
        return query


@dataclass
class ServerState:
    """Everything the routes share."""

    engine: Engine
    config: ServerConfig
    jobs: JobManager
    queries: QueryMemory
    thumbnails: OrderedDict[tuple[str, int, str], bytes] = field(default_factory=OrderedDict)
    thumb_lock: threading.Lock = field(default_factory=threading.Lock)


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _status(exc: Exception) -> int:
    if isinstance(exc, UploadError):
        return exc.status
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ForbiddenPathError | OutsideGalleryError):
        return 403
    if isinstance(exc, JobConflictError):
        return 409
    return 400


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _token_ok(request: Request, token: str) -> bool:
    given = (request.headers.get("x-tansaku-token")
             or request.cookies.get(TOKEN_COOKIE)
             or request.query_params.get("token"))
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _preload(engine: Engine) -> None:
    """Open every gallery (models, index, rows) so that first queries need not wait."""
    for name in engine.gallery_names():
        try:
            engine.warm.get(name)
        except Exception as exc:  # noqa: BLE001 (an empty or broken gallery must not stop the rest)
            log.warning("gallery %s not preloaded: %s", name, exc)


def create_app(engine: Engine | None = None, config: ServerConfig | None = None) -> FastAPI:
    """The tansaku web application over `engine` (default: the one the environment names)."""
    from engine.server import api, pages

    engine = engine or Engine()
    config = config or ServerConfig()
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.preload:
            threading.Thread(target=_preload, args=(engine,), name="preload", daemon=True).start()
        yield

    app = FastAPI(title="tansaku", version="0.1.0", lifespan=lifespan,
                  description="Search engine for images and for people: query warm galleries, "
                  "see why results matched, index folders under the allowed roots.")
    app.state.tansaku = ServerState(engine, config, JobManager(engine, list(config.allow_roots)),
                                    QueryMemory(config.recent_queries))

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        guarded = config.token and not request.url.path.startswith("/static/")
        if guarded and not _token_ok(request, config.token or ""):
            return _error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                          "(or open a page once with ?token=TOKEN)")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.max_bytes + 1024 * 1024:
            return _error(413, f"the request is {length} bytes; uploads are limited to "
                          f"{config.max_bytes} bytes")
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if config.token and request.query_params.get("token") == config.token:
            response.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(TansakuError)
    async def user_error(request: Request, exc: TansakuError) -> JSONResponse:
        return _error(_status(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()) if p not in ('body', 'query', 'path'))}: "
            f"{err.get('msg', 'invalid')}" for err in exc.errors())
        return _error(422, problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error answering %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server log has the details")

    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
