"""Query latency through a warm `tansaku serve` against cold `tansaku query` processes.

    OMP_NUM_THREADS=1 python scripts/bench_serve.py ../shared/data/holidays_even --queries 20 --json

Indexes GALLERY_FOLDER into a gallery (incremental: a second run re-uses it), starts
`tansaku serve` as its own process on a free localhost port, and times the same query images
(the folder's Holidays queries, `*00.jpg`, else evenly spaced images) three ways:
- warm: one after the other over HTTP (multipart upload, the page's request), after one warm-up
  query that loads the models;
- cold: one `tansaku query IMAGE --gallery NAME --json` process each (interpreter start, imports,
  model and index loading included: what a user of the CLI waits for);
- throughput: queries per second with 1, 2 and 4 concurrent HTTP clients.
It also reads the server's resident memory (VmRSS, and VmHWM: the peak) from /proc, and the CPU
seconds each side spends per query (the server process's from /proc while it answers the
sequential queries; each CLI process's from the kernel's accounting of children): on a machine
shared with other jobs, wall times stretch with the load, CPU seconds much less. Prints one JSON
object (`--json`) or a few lines. Both sides answer the same queries; the top results are
compared as a check.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core import Engine  # noqa: E402
from indexer.images import discover_images  # noqa: E402


def pick_queries(folder: Path, n: int) -> list[Path]:
    """The folder's Holidays queries (`*00.jpg`), else images spread evenly; at most n."""
    images = sorted(discover_images(folder))
    queries = [p for p in images if p.stem.endswith("00")] or images
    step = max(1, len(queries) // n)
    return queries[::step][:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 4), "p95_s": round(percentile(values, 95), 4),
            "mean_s": round(statistics.fmean(values), 4), "n": len(values)}


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/galleries", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"tansaku serve exited with {proc.returncode}")
    proc.kill()
    raise RuntimeError("tansaku serve did not answer within 120 s")


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--gallery", default=None, help="gallery name (default: bench-<folder name>)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = args.folder.resolve()
    name = args.gallery or f"bench-{folder.name}"
    engine = Engine()
    indexed = engine.index_folder(folder, name)
    queries = pick_queries(folder, args.queries)
    repo = str(Path(__file__).resolve().parents[1])  # this checkout, not another install
    env = {**os.environ, "TANSAKU_HOME": str(engine.settings.home),
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    env.pop("TANSAKU_TOKEN", None)
    load_before = os.getloadavg()

    port = free_port()
    server = start_server(port, env)
    url = f"http://127.0.0.1:{port}/api/galleries/{name}/query"
    http = httpx.Client(timeout=600)

    def ask(path: Path, client: httpx.Client = http) -> tuple[float, dict[str, Any]]:
        start = time.perf_counter()
        response = client.post(url, files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                               data={"top_k": str(args.top_k)})
        response.raise_for_status()
        return time.perf_counter() - start, response.json()

    try:
        first_query_s, _ = ask(queries[0])  # opens the gallery and loads the models
        cpu_start = cpu_seconds(server.pid)
        warm = [ask(q) for q in queries]
        warm_cpu = (cpu_seconds(server.pid) - cpu_start) / len(queries)
        qps = {}
        for clients in (1, 2, 4):
            jobs = queries * max(1, (2 * clients + len(queries) - 1) // len(queries))
            with ThreadPoolExecutor(clients) as pool:
                start = time.perf_counter()
                list(pool.map(lambda q: ask(q, httpx.Client(timeout=600)), jobs))
                qps[str(clients)] = round(len(jobs) / (time.perf_counter() - start), 3)
        memory = memory_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    cold, agree = [], 0
    cpu_start = children_cpu()
    for query, (_, served) in zip(queries, warm, strict=True):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "engine", "query", str(query), "--gallery", name,
                               "--top-k", str(args.top_k), "--json"], env=env, capture_output=True,
                              text=True, check=True)
        cold.append(time.perf_counter() - start)
        cli = json.loads(proc.stdout)
        agree += [r["path"] for r in cli["results"]] == [r["path"] for r in served["results"]]

    cold_cpu = (children_cpu() - cpu_start) / len(queries)
    warm_times = [t for t, _ in warm]
    result = {
        "gallery": name, "folder": str(folder), "images": indexed.indexed + indexed.unchanged,
        "queries": len(queries), "top_k": args.top_k,
        "warm_http": summary(warm_times), "first_query_s": round(first_query_s, 3),
        "cold_cli": summary(cold),
        "speedup_median": round(statistics.median(cold) / statistics.median(warm_times), 1),
        "cpu_s_per_query": {"warm_server": round(warm_cpu, 3), "cold_cli": round(cold_cpu, 3)},
        "cpu_speedup": round(cold_cpu / warm_cpu, 1),
        "qps": qps, "server_memory": memory,
        "same_ranking": f"{agree}/{len(queries)}",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
