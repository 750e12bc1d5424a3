"""`tansaku` command line: each command is a few lines over `engine.Engine`."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.errors import TansakuError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="tansaku: search engine for images and for people.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate on standard benchmarks.")
app.add_typer(eval_app, name="eval")

DbOption = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL (default: TANSAKU_DB or "
                                              "an SQLite file in TANSAKU_HOME).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
ModelOption = Annotated[str | None, typer.Option(
    "--model", help="Landmark model of a new gallery: gem-rootsift (default), "
    "delg-efficientnet-lite0[:HEADS] or delg-savedmodel:PATH[?preset=r50-gldv2-clean|"
    "r101-gldv2-clean|r50-gld|r101-gld].")]
RerankModeOption = Annotated[str | None, typer.Option(
    "--rerank-mode", help="ours or delf (DELF's KD-tree + affine RANSAC); default: the gallery's. "
    "Person galleries (query): kreciprocal (Zhong et al. 2017).")]
VerifierOption = Annotated[str | None, typer.Option(help="degensac, magsac or ransac.")]
ReportOption = Annotated[Path | None, typer.Option(
    "--report", help="Also write a self-contained HTML report with pictures to this file.")]


def _engine(db: str | None) -> Any:
    from engine.core import Engine
    from engine.settings import Settings

    return Engine(Settings.from_env(db=db))


def _emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def _emit_scores(scores: dict[str, Any], as_json: bool) -> None:
    """An evaluation's result: one JSON object, or one `key: value` line each."""
    if as_json:
        _emit_json(scores)
        return
    for key, value in scores.items():
        typer.echo(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


@app.command()
def index(
    folder: Annotated[Path, typer.Argument(help="Folder of images, searched recursively.")],
    gallery: Annotated[str, typer.Option("--gallery", "-g", help="Gallery name.")],
    profile: Annotated[str, typer.Option(help="landmark or person.")] = "landmark",
    prune: Annotated[bool, typer.Option("--prune", help="Drop images whose file is gone.")] = False,
    method: Annotated[str | None, typer.Option(
        help="Person descriptor for a new person gallery: lomo, gog, pcb, pcb:CKPT (a train-pcb or "
        "torchreid checkpoint; ?size=HxW its input size) or a fusion like gog+lomo.")
    ] = None,
    model: ModelOption = None,
    detect: Annotated[bool, typer.Option("--detect", help="Person galleries: find the people in each "
                                         "photo and index each person (a new gallery).")] = False,
    detector: Annotated[str, typer.Option(help="With --detect: hog, haar or hog+haar.")] = "hog",
    classifier: Annotated[Path | None, typer.Option(
        help="With --detect: person/not-person classifier file (scripts/train_person_classifier.py).")
    ] = None,
    attributes: Annotated[Path | None, typer.Option(
        help="Person galleries: attribute model (train-attributes) whose probabilities are kept.")
    ] = None,
    db: DbOption = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Describe images on Ray Data workers: a Ray address, or `local` for a "
        "local Ray instance (pip install 'tansaku[ray]').")] = None,
) -> None:
    """Index FOLDER into a gallery: new and changed files are described, unchanged ones skipped."""
    from engine.core import profile_config

    config = profile_config(profile, method, model, detector if detect else None, attributes, classifier)
    summary = _engine(db).index_folder(folder, gallery, profile=profile, prune=prune, config=config,
                                       ray=ray)
    for rel, reason in summary.failures:
        typer.echo(f"failed: {rel}: {reason}", err=True)
    typer.echo(
        f"gallery {summary.gallery}: {summary.indexed} indexed, {summary.unchanged} unchanged, "
        f"{summary.failed} failed, {summary.pruned} pruned ({summary.seconds:.1f} s)"
    )


@app.command()
def query(
    gallery: Annotated[str, typer.Option("--gallery", "-g", help="Gallery name.")],
    image: Annotated[Path | None, typer.Argument(help="Query image (optional with --attr).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Results to show.")] = 10,
    shortlist: Annotated[int, typer.Option(help="Global shortlist re-ranked by geometry.")] = 100,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Global ranking only.")] = False,
    rerank_mode: RerankModeOption = None,
    verifier: VerifierOption = None,
    attr: Annotated[str | None, typer.Option(
        "--attr", help="Attributes, e.g. personalFemale,carryingBackpack: rank by them alone, or "
        "with IMAGE re-score its shortlist.")] = None,
    save_matches: Annotated[Path | None, typer.Option(
        "--save-matches", help="Write each result's picture into this folder: the match view (PNG) "
        "in landmark galleries, the photo with the person's box drawn in person galleries.")] = None,
    explain: Annotated[Path | None, typer.Option(
        help="Write heat maps of the query and each result here (person galleries with abn:CKPT).")
    ] = None,
    tracklets: Annotated[bool, typer.Option(
        "--tracklets", help="Rank the gallery's tracklets (all images of one person and camera, "
        "from Market-style names), each described by the mean of its frames.")] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Rank a gallery's images (or tracklets) for IMAGE, a folder (a tracklet), or attributes."""
    from engine.core import rerank_conf

    engine = _engine(db)
    if image is None and not attr:
        raise TansakuError("give a query IMAGE, --attr, or both")
    conf = rerank_conf(rerank_mode if rerank_mode != "kreciprocal" else None, verifier)
    if image is None:
        result = engine.query_attributes(attr, gallery, top_k=top_k)
    else:
        kreciprocal = rerank_mode == "kreciprocal"  # person galleries: k-reciprocal re-ranking
        result = engine.query(image, gallery, top_k=top_k, shortlist=shortlist,
                              rerank=not no_rerank and not kreciprocal, conf=conf,
                              kreciprocal=kreciprocal and not no_rerank, explain=explain,
                              attributes=attr, tracklets=tracklets)
    if save_matches is not None:
        if engine.get_gallery(gallery).profile == "person":
            written = engine.save_matches(result, save_matches)
        else:
            from engine.reports import save_match_views

            written = save_match_views(engine, result, save_matches, conf)
        typer.echo(f"saved {len(written)} pictures in {save_matches}", err=True)
    if as_json:
        _emit_json(result.to_json())
        return
    _print_results(result)


@app.command()
def demo(db: DbOption = None) -> None:
    """Build a demo gallery from bundled sample photos and query it with a new view of one."""
    from engine.demo import run_demo

    summary, result = run_demo(_engine(db))
    typer.echo(f"gallery {summary.gallery}: {summary.indexed} indexed, {summary.unchanged} unchanged")
    typer.echo(f"query: {result.query}")
    _print_results(result)
    typer.echo("timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.times.items()))


def _print_results(result: Any) -> None:
    typer.echo(" rank   score  inliers  path")
    for r in result.results:
        inliers = "      -" if r.inliers is None else f"{r.inliers:7d}"
        box = f"  box {','.join(map(str, r.box))}" if getattr(r, "box", None) else ""
        attrs = f"  [{', '.join(r.attributes)}]" if getattr(r, "attributes", None) else ""
        matched = getattr(r, "matched_attributes", None)  # why it matched an attribute query
        why = "  (" + ", ".join(f"{k} {v:.2f}" for k, v in matched.items()) + ")" if matched else ""
        frames = getattr(r, "frames", None)  # a tracklet result: how many images it holds
        count = f"  ({len(frames)} frames)" if frames else ""
        typer.echo(f"{r.rank:5d}  {r.score:6.3f}  {inliers}  {r.path}{count}{box}{why}{attrs}")


@app.command("galleries")
def galleries(as_json: JsonOption = False, db: DbOption = None) -> None:
    """List galleries: profile, model, image counts by status, source folders (one line each)."""
    summaries = _engine(db).galleries()
    if as_json:
        _emit_json({"galleries": [g.to_json() for g in summaries]})
        return
    for g in summaries:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(g.images.items())) or "no images"
        typer.echo(f"{g.name}  {g.profile}  {g.model}  {counts}  {' '.join(g.sources) or '-'}")


@app.command()
def delete(
    gallery: Annotated[str, typer.Argument(help="Gallery to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    db: DbOption = None,
) -> None:
    """Delete a gallery: its images, runs and files (the source folders are not touched)."""
    engine = _engine(db)
    row = engine.get_gallery(gallery)
    if not yes and not typer.confirm(f"delete gallery {row.name!r} ({row.profile}) and its files?"):
        typer.echo("not deleted", err=True)
        raise typer.Exit(1)
    engine.delete_gallery(gallery)
    typer.echo(f"deleted gallery {gallery}")


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
    fmt: Annotated[str, typer.Option("--format", help="holidays, roxford or rparis.")] = "holidays",
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Global ranking only.")] = False,
    shortlist: Annotated[int, typer.Option(help="Global shortlist re-ranked by geometry.")] = 100,
    model: ModelOption = None,
    rerank_mode: RerankModeOption = None,
    verifier: VerifierOption = None,
    report: ReportOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Retrieval mAP on an instance-retrieval benchmark (indexes the dataset into its own gallery)."""
    from engine.core import profile_config, rerank_conf
    from engine.evaluation.retrieval import evaluate_retrieval

    details: list[Any] | None = [] if report else None
    scores = evaluate_retrieval(_engine(db), dataset, fmt, rerank=not no_rerank,
                                shortlist=shortlist, conf=rerank_conf(rerank_mode, verifier),
                                config=profile_config("landmark", model=model), details=details)
    if report is not None and details:
        from engine.reports import write_retrieval_report

        typer.echo(f"report: {write_retrieval_report(report, scores, details[0])}", err=True)
    _emit_scores(scores, as_json)


@eval_app.command("reid")
def eval_reid(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
    fmt: Annotated[str, typer.Option("--format", help="viper, market or multishot.")] = "viper",
    method: Annotated[str | None, typer.Option(help="A person method: lomo, gog, pcb, pcb:CKPT (a train-pcb "
                                        "or torchreid checkpoint), abn:CKPT (train-reid), cdpcf, layers, "
                                        "svdfc, mpncbp, ... or a fusion like gog+cdpcf; default: the "
                                        "person profile's (gog+lomo+cdpcf+cdpcf-mbv2).")] = None,
    metric: Annotated[str, typer.Option(help="euclidean, xqda or kxqda.")] = "xqda",
    trials: Annotated[int, typer.Option(help="Random splits (VIPeR, multishot).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the splits.")] = 0,
    report: ReportOption = None,
    shots: Annotated[int | None, typer.Option(
        help="Frames per tracklet (multishot; default: all).")] = None,
    pooling: Annotated[str, typer.Option(
        help="Tracklet pooling (multishot): mean, max, or attention (abn:CKPT's temporal "
        "attention).")] = "mean",
    rerank: Annotated[str, typer.Option(help="none or kreciprocal (Zhong et al. 2017).")] = "none",
    as_json: JsonOption = False,
) -> None:
    """Re-identification CMC / mAP / mINP on VIPeR, a Market-1501 layout or tracklets."""
    from engine.evaluation.reid import evaluate_reid

    details: list[Any] | None = [] if report else None
    scores = evaluate_reid(dataset, fmt, method=method, metric=metric, trials=trials, seed=seed,
                           shots=shots, pooling=pooling, rerank=rerank, details=details)
    if report is not None and details:
        from engine.reports import write_reid_report

        typer.echo(f"report: {write_reid_report(report, scores, details)}", err=True)
    _emit_scores(scores, as_json)


@app.command("train-projection")
def train_projection(
    dataset: Annotated[Path, typer.Argument(help="Labelled identities (Market-1501 or VIPeR layout).")],
    gallery: Annotated[str, typer.Option("--gallery", "-g", help="Person gallery to project.")],
    fmt: Annotated[str, typer.Option("--format", help="market or viper.")] = "market",
    metric: Annotated[str, typer.Option(help="xqda or kxqda.")] = "xqda",
    db: DbOption = None,
) -> None:
    """Learn XQDA (or kernel XQDA) for a person gallery and re-project its index."""
    from engine.training import train_projection as train

    _emit_json(train(_engine(db), dataset, fmt, gallery, metric))


@app.command("train-pcb")
def train_pcb(
    dataset: Annotated[Path, typer.Argument(help="Market-1501 layout (holding bounding_box_train/).")],
    out: Annotated[Path, typer.Option(help="Folder for the (resumable) checkpoint.")],
    epochs: Annotated[int, typer.Option(help="Epochs (the paper: 60).")] = 60,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate of the new layers (backbone: 0.1x).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Fine-tune PCB with per-stripe cross-entropy; re-running resumes from the checkpoint."""
    from indexer.extractors.pcb_train import train_pcb as train

    if not dataset.is_dir():
        raise TansakuError(f"dataset folder not found: {dataset}")
    path = train(dataset, out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    typer.echo(f"checkpoint: {path}")


@app.command("train-reid")
def train_reid(
    peta_dir: Annotated[Path, typer.Argument(help="PETA folder (its TownCentre, 3DPeS and SARC3D "
                                             "identities are used).")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write (resumed when it exists).")],
    no_attention: Annotated[bool, typer.Option("--no-attention",
                                               help="Baseline: no attention branch.")] = False,
    recipe: Annotated[str, typer.Option(
        help="deep (500 steps that also train ImageNet stages 5 and 6: about 15 minutes on a "
        "busy 2-core CPU), full (stages 5 and 6 frozen: about 5 minutes, less accurate), "
        "background-swap (full with backgrounds swapped: attention on the person), "
        "or short (tests).")] = "deep",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train the re-ID network with an attention branch (ABN) and its temporal attention.

    Use the result with `--method abn:OUT`.
    """
    from indexer.models.reid_abn.train import RECIPES
    from indexer.models.reid_abn.train import train_reid as train

    if not peta_dir.is_dir():
        raise TansakuError(f"training folder not found: {peta_dir}")
    if recipe not in RECIPES:
        raise TansakuError(f"unknown --recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    try:
        path = train(peta_dir, out, attention=not no_attention, recipe=recipe, seed=seed)
    except ValueError as exc:
        raise TansakuError(str(exc)) from exc
    typer.echo(f"checkpoint: {path}")


@app.command("train-delg")
def train_delg(
    dataset: Annotated[Path, typer.Argument(help="Labelled images: one sub-folder per landmark or "
                                            "object, or Corel / Holidays names (class = N // 100).")],
    out: Annotated[Path, typer.Option(help="Heads file to write (a resumable .ckpt goes beside it).")],
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 6,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate (Adam).")] = 1e-3,
    dim: Annotated[int, typer.Option(help="Global descriptor size after the whitening FC.")] = 512,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train the DELG-style model's heads with DELG's losses; re-running resumes from the checkpoint.

    Use the result with `tansaku index --model delg-efficientnet-lite0:OUT`.
    """
    from indexer.extractors.delg_train import train_delg as train

    if not dataset.is_dir():
        raise TansakuError(f"dataset folder not found: {dataset}")
    try:
        path = train(dataset, out, epochs, batch_size, lr, seed, dim=dim)
    except ValueError as exc:
        raise TansakuError(str(exc)) from exc
    typer.echo(f"heads: {path}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; other than localhost needs --token.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    allow_root: Annotated[list[Path] | None, typer.Option(
        "--allow-root", help="Folder under which the API may index (repeatable); none: no indexing.")
    ] = None,
    token: Annotated[str | None, typer.Option(
        envvar="TANSAKU_TOKEN", help="Token every request must carry (Authorization: Bearer).")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest query upload, in MB.")] = 20.0,
    max_pixels: Annotated[int, typer.Option(help="Largest query image, in pixels.")] = 40_000_000,
    db: DbOption = None,
) -> None:
    """Serve the REST API (OpenAPI at /docs) and web pages over warm galleries."""
    try:
        import uvicorn

        from engine.server import ServerConfig, create_app, is_loopback
    except ImportError as exc:
        raise TansakuError(f"tansaku serve needs the serve extra ({exc.name} is missing): "
                           "pip install -e '.[serve]'") from exc
    if not is_loopback(host) and not token:
        raise TansakuError(f"binding to {host} exposes the server beyond this machine: give "
                           "--token (or TANSAKU_TOKEN)")
    roots = []
    for root in allow_root or []:
        if not root.expanduser().is_dir():
            raise TansakuError(f"--allow-root {root}: not a folder")
        roots.append(root.expanduser().resolve())
    config = ServerConfig(tuple(roots), token, int(max_upload_mb * 1024 * 1024), max_pixels,
                          preload=True)
    typer.echo(f"tansaku: serving on http://{host}:{port}/ (API docs at /docs)", err=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or kill: uvicorn has shut down cleanly
        uvicorn.run(create_app(_engine(db), config), host=host, port=port, log_level="warning")


@eval_app.command("scenes")
def eval_scenes(
    dataset: Annotated[Path, typer.Argument(help="images/, queries/ and boxes.json.")],
    detector: Annotated[str, typer.Option(help="hog, haar, hog+haar, or none (whole photos).")] = "hog",
    classifier: Annotated[Path | None, typer.Option(help="Person/not-person classifier file.")] = None,
    method: Annotated[str, typer.Option(help="Person descriptor: lomo, gog, ...")] = "lomo",
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Person detection (IoU >= 0.5) and search in scene photos: recall, precision, mAP, rank-1."""
    from engine.evaluation.scenes import evaluate_scenes

    detect = None if detector == "none" else detector
    _emit_scores(evaluate_scenes(_engine(db), dataset, detect, classifier, method), as_json)


@app.command("train-attributes")
def train_attributes(
    dataset: Annotated[Path, typer.Argument(help="PETA layout: one folder per subset with Label.txt.")],
    out: Annotated[Path, typer.Option(help="Model file to write (a resumable .ckpt goes beside it).")],
    head: Annotated[str, typer.Option(help="plain (DeepMAR) or cnn-rnn.")] = "plain",
    split: Annotated[str, typer.Option(help="all, pool:K (K = 0..4) or leave-out:SUBSET.")] = "all",
    epochs: Annotated[int, typer.Option(help="Epochs (cnn-rnn: 6 is what the README used).")] = 20,
    augment: Annotated[bool, typer.Option("--augment", help="Also train on an augmented view.")] = False,
    per_person: Annotated[int | None, typer.Option(help="At most N images per person id.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train a pedestrian attribute head on PETA labels; re-running resumes from the checkpoint."""
    from engine.attributes import train_attributes as train
    from engine.settings import Settings
    from indexer.models.attributes.train import TrainConf

    if head not in ("plain", "cnn-rnn"):
        raise TansakuError(f"unknown --head {head!r}; valid: plain, cnn-rnn")
    conf = TrainConf(head=head, epochs=epochs, seed=seed, augment=augment)
    cache = Settings.from_env().home / "cache" / "trunk-maps"
    _emit_json(train(dataset, out, conf, split=split, per_person=per_person, cache=cache))


@eval_app.command("attributes")
def eval_attributes(
    dataset: Annotated[Path, typer.Argument(help="PETA layout: one folder per subset with Label.txt.")],
    model: Annotated[Path, typer.Option(help="Model file written by train-attributes.")],
    fmt: Annotated[str, typer.Option("--format", help="peta.")] = "peta",
    split: Annotated[str, typer.Option(help="all, pool:K (its test part) or leave-out:SUBSET.")] = "all",
    per_person: Annotated[int | None, typer.Option(help="At most N images per person id.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Attribute recognition mA and instance accuracy / precision / recall / F1 (PETA's 35)."""
    from engine.evaluation.attributes import evaluate_attributes
    from engine.settings import Settings

    cache = Settings.from_env().home / "cache" / "trunk-maps"
    _emit_scores(evaluate_attributes(dataset, model, fmt, split, per_person, cache), as_json)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the same orderly stop as Ctrl-C: work so far is saved


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for package in ("engine", "indexer", "matcher", "storage"):
        logging.getLogger(package).setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # Not standalone, so our errors reach us; Typer turns Ctrl-C into a returned 130.
        code = app(standalone_mode=False)
    except TansakuError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Abort:  # a confirmation answered by end of input or Ctrl-C
        typer.echo("aborted", err=True)
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))
    if code == 130:
        typer.echo("interrupted: work done so far is saved; run the command again to finish.",
                   err=True)
    if isinstance(code, int) and code:
        sys.exit(code)
