"""Peak resident memory of `tansaku index` and `tansaku query` on a folder holding one huge image.

    python scripts/bench_image_memory.py /tmp/bigfolder [--tansaku .venv/bin/tansaku] [--home /tmp/h]

Writes, under the given folder (outside the repository), `big/`: ten ordinary photos (scikit-image
samples as JPEG) and one 20000x12000 PNG, `photos/`: the ten photos alone (the baseline), and
`bigjpg/`: one 12000x8000 JPEG. Then, for the landmark and person profiles, runs `index` on each
folder and `query` with the PNG, a photo and the big JPEG, each under `/usr/bin/time -v`, and
prints one line per run: stage, profile, exit code, peak RSS (MB) and the last line of output.
The commands run with OMP_NUM_THREADS=1 in a fresh TANSAKU_HOME.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "coins", "camera", "cat")


def make_folders(root: Path) -> None:
    for sub in ("big", "photos", "bigjpg"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        image = getattr(data, name)()
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        for sub in ("big", "photos"):
            Image.fromarray(image).save(root / sub / f"{name}.jpg", quality=92)
    huge = cv2.resize(data.astronaut(), (20000, 12000), interpolation=cv2.INTER_LINEAR)
    Image.fromarray(huge).save(root / "big" / "huge.png", compress_level=1)
    del huge
    big = cv2.resize(data.chelsea(), (12000, 8000), interpolation=cv2.INTER_LINEAR)
    Image.fromarray(big).save(root / "bigjpg" / "big.jpg", quality=90)


def measure(tansaku: str, env: dict[str, str], *args: str) -> tuple[int, int, str]:
    """(exit code, peak RSS in MB, last output line) of one tansaku command."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as report:
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", report.name, tansaku, *args],
                              env=env, capture_output=True, text=True)
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read())
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, int(found.group(1)) // 1024 if found else -1, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tansaku", default=shutil.which("tansaku") or ".venv/bin/tansaku")
    parser.add_argument("--home", type=Path, default=None, help="TANSAKU_HOME (default: a fresh one)")
    args = parser.parse_args()
    if not (args.folder / "bigjpg" / "big.jpg").exists():  # the last file written
        make_folders(args.folder)
    home = args.home or Path(tempfile.mkdtemp(prefix="tansaku-memory-"))
    env = {**os.environ, "TANSAKU_HOME": str(home), "OMP_NUM_THREADS": "1"}
    big, photos, bigjpg = (args.folder / s for s in ("big", "photos", "bigjpg"))
    runs = []
    for profile, tag in (("landmark", "L"), ("person", "P")):
        extra = ["--profile", profile]
        runs += [
            ("index photos only", profile, ["index", str(photos), "-g", f"{tag}0", *extra]),
            ("index photos + PNG", profile, ["index", str(big), "-g", tag, *extra]),
            ("query 20000x12000 PNG", profile, ["query", str(big / "huge.png"), "-g", tag]),
            ("query photo", profile, ["query", str(big / "astronaut.jpg"), "-g", tag]),
            ("index 12000x8000 JPEG", profile, ["index", str(bigjpg), "-g", f"{tag}J", *extra]),
            ("query 12000x8000 JPEG", profile, ["query", str(bigjpg / "big.jpg"), "-g", tag]),
        ]
    print(f"{'stage':<24} {'profile':<9} {'exit':>4} {'peak RSS MB':>11}  last line")
    for stage, profile, cmd in runs:
        code, rss, last = measure(args.tansaku, env, *cmd)
        print(f"{stage:<24} {profile:<9} {code:>4} {rss:>11}  {last[:100]}", flush=True)


if __name__ == "__main__":
    main()
