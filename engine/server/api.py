"""REST API under /api: each route is a few lines over the Engine (OpenAPI at /docs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from engine.catalog import gallery_overview, gallery_overviews, served_file
from engine.core import QueryResult, rerank_conf
from engine.errors import NotFoundError
from engine.jobs import JobConflictError
from engine.server.app import ServerState
from engine.uploads import decode_upload
from engine.visual import THUMB_SIDE, encode, match_view, thumbnail
from indexer.images import ImageReadError, read_image
from indexer.models.person_detector.detect import crop

router = APIRouter(prefix="/api")
_THUMBS = 1024  # thumbnails kept in memory


def state(request: Request) -> ServerState:
    """The server's shared state."""
    return request.app.state.tansaku


def _g(name: str) -> str:
    return quote(name, safe="")


@router.get("/galleries", summary="List galleries with image counts and failures")
def list_galleries(request: Request) -> dict[str, Any]:
    engine = state(request).engine
    return {"galleries": gallery_overviews(engine)}


@router.get("/galleries/{name}", summary="One gallery: profile, model, counts, failures, last run")
def get_gallery(request: Request, name: str) -> dict[str, Any]:
    return gallery_overview(state(request).engine, name)


@router.delete("/galleries/{name}", summary="Delete a gallery, its index and stored features")
def delete_gallery(request: Request, name: str) -> dict[str, Any]:
    s = state(request)
    if s.jobs.running(name):
        raise JobConflictError(f"gallery {name!r} is being indexed; cancel the job first")
    s.engine.delete_gallery(name)
    s.engine.warm.forget(name)
    return {"deleted": name}


@router.post("/galleries/{name}/query",
             summary="Query a gallery with an uploaded image (the `tansaku query --json` object)")
def query_gallery(
    request: Request,
    name: str,
    file: Annotated[UploadFile, File(description="The query image (JPEG, PNG, WebP, ...).")],
    top_k: Annotated[int, Form(ge=1, le=1000)] = 10,
    shortlist: Annotated[int, Form(ge=1, le=10000)] = 100,
    rerank: Annotated[bool, Form()] = True,
    mode: Annotated[str | None, Form(description="Re-ranking mode: ours or delf.")] = None,
    attributes: Annotated[str | None, Form(
        description="Person galleries with attributes: re-score the shortlist by these "
        "(comma-separated names or words, as `tansaku query IMAGE --attr`).")] = None,
    tracklets: Annotated[bool, Form(
        description="Person galleries: rank whole tracklets (the images of one person from one "
        "camera), as `tansaku query IMAGE --tracklets`; each result lists its frames.")] = False,
) -> dict[str, Any]:
    s = state(request)
    data = file.file.read(s.config.max_bytes + 1)
    pixels = decode_upload(data, s.config.max_bytes, s.config.max_pixels)
    conf = rerank_conf(mode or None)
    opened = s.engine.warm.get(name)
    result = s.engine.search_pixels(opened, pixels, file.filename or "upload", top_k, shortlist,
                                    rerank, conf, attributes or None, tracklets)
    assert result.description is not None
    query_id = s.queries.add(name, pixels, result.description, conf)
    out = _with_urls(result, query_id)
    out["match_view"] = "heat-maps" if s.engine.heat_map_checkpoint(opened) else "inliers"
    return out


@router.get("/galleries/{name}/attributes",
            summary="What a person gallery can be searched by: attribute names, complements, words")
def attribute_vocabulary(request: Request, name: str) -> dict[str, Any]:
    return state(request).engine.attribute_vocabulary(name)


@router.get("/galleries/{name}/attributes/query",
            summary="Rank a person gallery by attributes (the `tansaku query --attr ... --json` object)")
def query_attributes(
    request: Request,
    name: str,
    q: Annotated[str, Query(min_length=1, max_length=2000, description=(
        "Comma-separated attribute names or words, e.g. `female, backpack, red top`."))],
    top_k: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    s = state(request)
    return _with_urls(s.engine.search_attributes(s.engine.warm.get(name), q, top_k))


def _with_urls(result: QueryResult, query_id: str | None = None) -> dict[str, Any]:
    """The result's JSON with thumbnail and original URLs (and the match views of an image query)."""
    out = result.to_json()
    if query_id is not None:
        out["query_id"] = query_id
        out["query_url"] = f"/api/queries/{query_id}/image"
    base = f"/api/galleries/{_g(result.gallery)}/images"
    for item in out["results"]:
        image_id = item["image_id"]
        item["thumbnail_url"] = f"{base}/{image_id}/thumbnail"
        item["image_url"] = f"{base}/{image_id}/original"
        if query_id is not None:
            item["match_url"] = f"/api/queries/{query_id}/matches/{image_id}.png"
        if "frame_ids" in item:
            item["frame_urls"] = [f"{base}/{i}/thumbnail" for i in item["frame_ids"]]
    return out


@router.get("/galleries/{name}/images/{image_id}/thumbnail",
            summary="A gallery image's thumbnail (JPEG; a person detected in a photo: the box's pixels)",
            response_class=Response)
def image_thumbnail(request: Request, name: str, image_id: int) -> Response:
    s = state(request)
    opened = s.engine.warm.get(name)
    path = served_file(opened, image_id)
    key = (name, image_id, opened.rows[image_id].content_hash)
    with s.thumb_lock:
        data = s.thumbnails.get(key)
    if data is None:
        box = opened.crops.get(image_id, ("", None))[1]
        data = encode(thumbnail(crop(_read(path, None), box) if box else _read(path, THUMB_SIDE)), "jpg")
        with s.thumb_lock:
            s.thumbnails[key] = data
            while len(s.thumbnails) > _THUMBS:
                s.thumbnails.popitem(last=False)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=300"})


@router.get("/galleries/{name}/images/{image_id}/original", summary="A gallery image's file",
            response_class=FileResponse)
def image_original(request: Request, name: str, image_id: int) -> FileResponse:
    opened = state(request).engine.warm.get(name)
    path = served_file(opened, image_id)
    if not path.is_file():
        raise NotFoundError(f"the file of image {image_id} is gone from {path.parent}")
    return FileResponse(path)


@router.get("/queries/{query_id}/image", summary="A recent query's image (JPEG)", response_class=Response)
def query_image(request: Request, query_id: str) -> Response:
    query = state(request).queries.get(query_id)
    return Response(encode(thumbnail(query.pixels, 640), "jpg"), media_type="image/jpeg")


@router.get("/queries/{query_id}/matches/{image_id}.png",
            summary="Match view: the query and one result side by side, inliers joined (person "
                    "galleries described by abn:CKPT: the network's heat maps over both)",
            response_class=Response)
def match_png(request: Request, query_id: str, image_id: int) -> Response:
    s = state(request)
    query = s.queries.get(query_id)
    opened = s.engine.warm.get(query.gallery)
    if s.engine.heat_map_checkpoint(opened) is not None:
        if image_id not in opened.rows:
            raise NotFoundError(f"gallery {opened.gallery.name!r} has no indexed image {image_id}")
        box = opened.crops.get(image_id, ("", None))[1]
        result = _read(served_file(opened, image_id), None)
        panel, kind = s.engine.heat_maps(opened, query.pixels, crop(result, box) if box else result)
        return Response(encode(panel, "png"), media_type="image/png", headers={"X-Explanation": kind})
    pair = s.engine.match(opened, query.description, image_id, query.conf)
    candidate = _read(served_file(opened, image_id), opened.describer.max_side)  # keypoints' frame
    caption = f"{pair.inliers} inliers of {pair.putative} matches: {opened.paths[image_id]}"
    view = match_view(query.pixels, candidate, pair.query_points * query.scale,
                      pair.candidate_points, caption)
    return Response(encode(view, "png"), media_type="image/png",
                    headers={"X-Inliers": str(pair.inliers)})


class JobRequest(BaseModel):
    """An indexing job: a folder under an allowed root, into a gallery (created if new)."""

    folder: str = Field(description="Absolute, or relative to the first allowed root.")
    gallery: str = Field(min_length=1, max_length=200)
    profile: str = "landmark"


@router.post("/jobs", status_code=202, summary="Start indexing a folder under an allowed root")
def start_job(request: Request, job: JobRequest) -> dict[str, Any]:
    return state(request).jobs.start(job.folder, job.gallery, job.profile).to_json()


@router.get("/jobs", summary="Indexing jobs, newest first")
def list_jobs(request: Request) -> dict[str, Any]:
    s = state(request)
    return {"jobs": [j.to_json() for j in s.jobs.list()],
            "allow_roots": [str(r) for r in s.config.allow_roots]}


@router.get("/jobs/{job_id}", summary="One job: status, progress and failures so far")
def get_job(request: Request, job_id: int) -> dict[str, Any]:
    return state(request).jobs.get(job_id).to_json()


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job (it stops after the current batch)")
def cancel_job(request: Request, job_id: int) -> dict[str, Any]:
    return state(request).jobs.cancel(job_id).to_json()


def _read(path: Path, max_side: int | None) -> np.ndarray:
    try:
        return read_image(path, max_side)
    except ImageReadError as exc:
        raise NotFoundError(f"cannot read {exc.path.name}: {exc.reason}") from exc
