"""The search service under load: queries/s and latency of `mmvicreg serve` over 100,000 vectors, flat and approximate.

    python benchmarks/serve.py [--items 100000] [--clients 8] [--seconds 15] [--no-write]

An index of ``--items`` generated vectors (unit vectors around 1,000 cluster centres, 256-d, each a "caption"
item) is written twice through :func:`mmvicreg.evaluation.search_index.index_rows`: ``flat`` (exact) and ``auto``
(the size-chosen kind: IVF from 100,000 items, its recall@10 against exact measured on 500 sample rows and its
``nprobe`` raised until 0.95). The query model is a small random one (test_resnet + GRU towers, 256-d embeddings),
so a text query costs what a small tower costs. For each index, ``mmvicreg serve`` runs as its own process and
``--clients`` threads send text queries (k = 10) for ``--seconds``: queries/s, and p50/p99 of the latency the
clients saw. Last, one query through the warm service against one ``mmvicreg search`` (a new process: Python,
torch, the model and the index loaded for one query), as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _measure import write_section  # benchmarks/ is on sys.path

RESULTS = str(Path(__file__).with_name("RESULTS.md"))
WORDS = ["a", "red", "blue", "small", "large", "circle", "square", "left", "of", "dog", "on", "the", "grass"]


def _model(folder: Path) -> Path:
    import torch

    from mmvicreg import JointEmbedding

    torch.manual_seed(0)
    captions = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    return JointEmbedding.from_config(
        {"image": {"encoder": "test_resnet", "expander": "256", "transform": {"size": 32}},
         "caption": {"encoder": {"name": "gru", "word_dim": 32, "hidden_dim": 64}, "expander": "256"}},
        captions=captions).save_pretrained(folder)


def _chunks(n: int, d: int = 256, clusters: int = 1000, chunk: int = 10_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x = centres[rng.integers(clusters, size=m)] + 0.5 * rng.normal(size=(m, d)).astype(np.float32)
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def _build(out: Path, model: Path, n: int, kind: str) -> tuple[dict, float]:
    from mmvicreg.evaluation.search_index import index_rows, model_fingerprint

    rows = [{"id": f"item {i}", "kind": "caption", "text": f"item {i}"} for i in range(n)]
    described = {"model": {"ref": str(model.resolve()), "fingerprint": model_fingerprint(model)},
                 "branches": {"caption": "caption"}, "sources": {"images": None, "captions": None}}
    t0 = time.perf_counter()
    index = index_rows(out, _chunks(n), rows, described, kind=kind)
    return index.meta, time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(index: Path) -> tuple[subprocess.Popen, str]:
    import urllib3

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mmvicreg", "serve", "--index", str(index), "--port", str(port),
                             "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if urllib3.request("GET", f"{url}/api/health", retries=False).status == 200:
                return proc, url
        except urllib3.exceptions.HTTPError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"mmvicreg serve did not start: {proc.stderr.read().decode()[-2000:]}")


def _load(url: str, clients: int, seconds: float) -> dict:
    import urllib3

    pool = urllib3.PoolManager(maxsize=clients)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while time.perf_counter() < stop:
            q = " ".join(rng.choice(WORDS, size=6))
            t0 = time.perf_counter()
            r = pool.request("GET", f"{url}/api/search", fields={"q": q, "k": "10"})
            ms = 1000 * (time.perf_counter() - t0)
            with lock:
                (latencies.append(ms) if r.status == 200 else errors.__setitem__(0, errors[0] + 1))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies)
    return {"queries": len(lat), "errors": errors[0], "qps": len(lat) / elapsed,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def _one_query_ratio(url: str, index: Path) -> tuple[float, float]:
    """(seconds of one query through the warm service, seconds of one `mmvicreg search` process)."""
    import urllib3

    served = []
    for _ in range(20):
        t0 = time.perf_counter()
        urllib3.request("GET", f"{url}/api/search", fields={"q": "a red circle left of a blue square", "k": "10"})
        served.append(time.perf_counter() - t0)
    cli = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmvicreg", "search", "--index", str(index), "--text",
                        "a red circle left of a blue square", "-k", "10", "--device", "cpu"],
                       check=True, capture_output=True)
        cli.append(time.perf_counter() - t0)
    return statistics.median(served), statistics.median(cli)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    rows, ratio = [], None
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(Path(tmp) / "model")
        for kind in ("flat", "auto"):
            meta, build_s = _build(Path(tmp) / kind, model, a.items, kind)
            proc, url = _serve(Path(tmp) / kind)
            try:
                load = _load(url, a.clients, a.seconds)
                if kind == "flat":
                    ratio = _one_query_ratio(url, Path(tmp) / kind)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            recall = meta["recall"]
            quality = "exact" if recall.get("exact") else (f"recall@10 {recall['recall_at_10']:.3f} "
                                                           f"(nprobe {recall.get('nprobe')})")
            rows.append(f"| {kind} → {meta['index']} | {quality} | {build_s:.1f} | {load['qps']:.0f} | "
                        f"{load['p50_ms']:.1f} | {load['p99_ms']:.1f} | {load['errors']} |")
            print(rows[-1], json.dumps(load), flush=True)
    served, cli = ratio
    body = (f"Command: `python benchmarks/serve.py --items {a.items} --clients {a.clients} --seconds {a.seconds:g}` "
            f"({os.cpu_count()} CPUs; client threads, server and FAISS share them). {a.items:,} generated 256-d "
            f"vectors; text queries, k = 10, through a small random GRU text tower.\n\n"
            "| index | quality | build s | queries/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(rows)
            + f"\n\nOne query: through the warm service {1000 * served:.1f} ms; through `mmvicreg search` (a new process "
              f"loading torch, the model and the index) {cli:.2f} s: **{cli / served:.0f}×** faster served.")
    print(body)
    if not a.no_write:
        write_section(RESULTS, "Search service under load (mmvicreg serve)", body)


if __name__ == "__main__":
    main()
