"""Learning a gallery's projection from labelled identities (`tansaku train-projection`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from engine.errors import TansakuError
from engine.evaluation.reid import describe_set
from indexer.datasets.reid import PersonSet, load_market, load_viper
from indexer.gallery_index import rebuild_index
from indexer.projections.gallery import PROJECTIONS, make_projection
from indexer.projections.person_stages import PersonStages, needs_stages
from indexer.registry import Registry
from storage.gallery_files import GalleryFiles
from storage.models import Gallery, Image, ImageStatus

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

# the layouts whose training identities a projection is learned from
TRAINING_FORMATS: Registry[str] = Registry("--format", {"market": "market", "viper": "viper"})


def _training_persons(dataset: Path, fmt: str) -> PersonSet:
    try:
        return load_market(dataset).train if TRAINING_FORMATS.check(fmt) == "market" \
            else load_viper(dataset)
    except (FileNotFoundError, ValueError) as exc:  # the format, the layout or a file name
        raise TansakuError(str(exc)) from exc


def train_projection(
    engine: Engine, dataset: Path, fmt: str, gallery: str, kind: str = "xqda"
) -> dict[str, Any]:
    """Learn `kind` on the dataset's training identities, store it with the gallery, re-project."""
    row = engine.get_gallery(gallery)
    if row.profile != "person":
        raise TansakuError(f"gallery {gallery!r} has profile {row.profile!r}; projections are "
                           "learned for person galleries")
    try:
        PROJECTIONS.check(kind)
    except ValueError as exc:
        raise TansakuError(str(exc)) from exc
    method = row.config["global"]["conf"]["method"]
    persons = _training_persons(Path(dataset).expanduser(), fmt)
    features = describe_set(method, persons, "training identities")
    files = GalleryFiles(engine.settings.home, row.id)
    stamp = int(time.time())  # new files: the old ones stay valid until the config switches
    spec: dict[str, Any] = {"kind": kind, "file": f"projection-{stamp}.npz", "dataset": str(dataset),
                            "identities": int(len(set(persons.pids.tolist())))}
    start = time.monotonic()
    if needs_stages(method):  # GOG's normaliser, C-DPCF, a fusion's per-part normalisation
        stages = PersonStages(method).fit(features, persons.pids, persons.camids)
        features = stages.transform(features, persons.camids)
        spec["stages"] = f"stages-{stamp}.npz"
        stages.save(files.path(spec["stages"]))
    model = make_projection(kind).fit(features, persons.pids, persons.camids)
    fit_seconds = time.monotonic() - start
    model.save(files.path(spec["file"]))
    config = {**row.config, "projection": spec}
    with files.write_lock(), engine.sessions() as session:
        ids = list(session.scalars(select(Image.id).where(
            Image.gallery_id == row.id, Image.status == ImageStatus.INDEXED)))
        if ids:
            rebuild_index(files, config, ids)
        stored = session.get(Gallery, row.id)
        assert stored is not None
        stored.config = config
        session.commit()
    return {"gallery": gallery, "projection": kind, "method": method,
            "training_images": len(persons), **config["projection"],
            "reprojected": len(ids), "fit_seconds": round(fit_seconds, 2)}
