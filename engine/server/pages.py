"""Server-rendered pages (Jinja2): the gallery list with jobs, and a gallery's query page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from engine.catalog import gallery_overview, gallery_overviews
from engine.errors import NotFoundError, TansakuError
from engine.server.app import HERE, ServerState
from matcher.rerank import RERANK_MODES

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")


def _state(request: Request) -> ServerState:
    return request.app.state.tansaku


@router.get("/", response_class=HTMLResponse)
def index_page(request: Request) -> HTMLResponse:
    s = _state(request)
    galleries = gallery_overviews(s.engine, failures=0)
    return templates.TemplateResponse(request, "index.html", {
        "galleries": galleries, "allow_roots": [str(r) for r in s.config.allow_roots]})


@router.get("/galleries/{name}", response_class=HTMLResponse)
def gallery_page(request: Request, name: str) -> HTMLResponse:
    engine = _state(request).engine
    try:
        overview = gallery_overview(engine, name)
    except NotFoundError as exc:
        return templates.TemplateResponse(request, "error.html", {"message": str(exc)},
                                          status_code=404)
    try:  # person galleries with attribute probabilities can also be searched in words
        vocabulary = engine.attribute_vocabulary(name)
    except TansakuError:
        vocabulary = None
    return templates.TemplateResponse(request, "gallery.html", {
        "g": overview, "modes": list(RERANK_MODES), "vocabulary": vocabulary})
