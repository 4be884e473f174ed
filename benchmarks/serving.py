"""End-to-end serving latency: gRPC through the local server against the SavedModel in-process.

Builds a `YouTubeCandidateModel` over 1,000,000 string video IDs ("v0".."v999999"), gives its
output embeddings clustered Gaussian values (so the ScaNN index is not trivially uniform),
exports it with `index="scann"` (the export's default settings, k=100), serves it with
`python -m tfrs_youtube.serving.server` in a subprocess, twice (batching off, then
`--enable-batching` with the `--max-batch-size`, `--batch-timeout-micros` and
`--num-batch-threads` given here), and sends single-user requests (log-uniform watch histories
of 10-50 videos) through `tfrs_youtube.serving.Client`, from 1 and from N concurrent client
threads. The reference, measured in the same run on the same requests, calls the same
SavedModel's `serving_default` signature in this process, so the difference is the gRPC +
server overhead. Both servers run at once and the three paths take turns, `--rounds` times
per client count, so a load that drifts (the machine is shared) reaches all three alike; each
path's budget per client count, `--seconds` and `--max-requests`, is split over the rounds.

Usage: python benchmarks/serving.py [--num-videos 1000000] [--dim 256] [--threads 8]
       [--seconds 15] [--max-requests 3000] [--max-batch-size 8] [--batch-timeout-micros 0]
       [--num-batch-threads 1] [--index scann] [--rounds 3]
Prints p50/p99 latency (ms) and requests per second side by side, then the two ratios the
issue asks for: gRPC p50 minus in-process p50 at 1 client, and requests per second with
batching on over off at N clients.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

# The checkout this file is in, here and in the server subprocess (not an older installed copy).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import tfrs_youtube  # noqa: E402, F401  (Keras 2 before TensorFlow)


def build_model(num_videos: int, dim: int, seed: int):
    """An untrained model whose v_j are clustered Gaussian and b_j small (latency only)."""
    from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

    config = YouTubeCandidateConfig(
        video_vocabulary=[f"v{i}" for i in range(num_videos)],
        embedding_dim=32,
        output_dim=dim,
        depth=1,
        features=["watches"],
        num_sampled=1024,
        l2_normalize=False,  # the paper's unnormalized u . v_j + b_j (the figures)
        seed=seed,
    )
    model = YouTubeCandidateModel(config)
    model.user_embedding(model.placeholder_features())
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (1000, dim)).astype(np.float32)
    table = centers[rng.integers(0, len(centers), num_videos)]
    table += rng.normal(0, 0.5, table.shape).astype(np.float32)
    model.candidates.output_embeddings.assign(table / np.sqrt(dim))  # the property builds the layer
    model.candidates.bias.assign(rng.normal(0, 0.1, num_videos).astype(np.float32))
    return model


def histories(num_videos: int, count: int, seed: int) -> list[list[str]]:
    """Watch histories of 10-50 videos with log-uniform ranks (popular videos recur)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ranks = np.floor(np.exp(rng.random(rng.integers(10, 51)) * np.log(num_videos + 1))) - 1
        out.append([f"v{int(r)}" for r in np.clip(ranks, 0, num_videos - 1)])
    return out


def measure(call, requests, threads: int, seconds: float, max_requests: int) -> dict:
    """Runs `call(history)` from `threads` threads until the time or request budget is spent."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    next_index = [0]

    def worker():
        while time.perf_counter() < deadline:
            with lock:
                index = next_index[0]
                if index >= max_requests:
                    return
                next_index[0] += 1
            start = time.perf_counter()
            call(requests[index % len(requests)])
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "wall": wall}


def summary(phases: list[dict]) -> dict:
    """p50 / p99 over every request of the phases, and requests per second of their time."""
    ms = np.array([x for phase in phases for x in phase["latencies"]]) * 1000
    return {"n": len(ms), "p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99),
            "rps": len(ms) / sum(phase["wall"] for phase in phases)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(base: str, port: int, threads: int, extra: list[str]):
    """The server subprocess, once it prints its "Serving model" line; and its start time."""
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "tfrs_youtube.serving.server", base, "--model-name", "youtube",
         "--port", str(port), "--max-workers", str(max(8, threads)), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])},
    )
    ready = server.stdout.readline()
    if not ready.startswith("Serving model"):
        raise SystemExit(f"the server did not start (exit code {server.wait()})")
    return server, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-videos", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256, help="d, the size of u and v_j")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--index", default="scann", choices=["scann", "brute_force"])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="time budget per phase")
    parser.add_argument("--max-requests", type=int, default=3000, help="per phase")
    parser.add_argument("--max-batch-size", type=int, default=8, help="batching server's")
    parser.add_argument("--batch-timeout-micros", type=int, default=0, help="batching server's")
    parser.add_argument("--num-batch-threads", type=int, default=1, help="batching server's")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the three paths")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import tensorflow as tf

    from tfrs_youtube.export import export_saved_model
    from tfrs_youtube.serving import Client, ServingError

    batching = ["--enable-batching", "--max-batch-size", str(args.max_batch_size),
                "--batch-timeout-micros", str(args.batch_timeout_micros),
                "--num-batch-threads", str(args.num_batch_threads)]
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "youtube")
        start = time.perf_counter()
        model = build_model(args.num_videos, args.dim, args.seed)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        version_dir = export_saved_model(model, base, index=args.index, k=args.k)
        export_seconds = time.perf_counter() - start
        del model

        requests = histories(args.num_videos, 500, args.seed + 1)
        signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]

        def in_process(history):
            return signature(watch_history=tf.constant([history]))["video_ids"]

        same, starts, exit_codes, servers = {}, {}, {}, []
        try:
            paths = {"in-process signature": in_process}
            for label, extra in (("gRPC, batching off", []), ("gRPC, batching on", batching)):
                server, starts[label] = start_server(base, free_port(), args.threads, extra)
                servers.append((label, server))
                port = int(server.args[server.args.index("--port") + 1])
                client = Client(f"127.0.0.1:{port}", model_name="youtube", timeout=30.0)
                # Same answers both ways (and the first calls warm both paths up).
                same[label] = all(
                    [v.decode() for v in in_process(h).numpy()[0]] == client.recommend(h).ids
                    for h in requests[:20]
                )
                paths[label] = client.recommend
            phases: dict = {}
            for threads in (1, args.threads):
                for _ in range(args.rounds):
                    for label, call in paths.items():
                        phases.setdefault((label, threads), []).append(measure(
                            call, requests, threads, args.seconds / args.rounds,
                            args.max_requests // args.rounds))
            rows = [(label, threads, summary(p)) for (label, threads), p in phases.items()]
        except ServingError as error:
            raise SystemExit(f"serving failed: {error}")
        finally:
            for label, server in servers:
                server.send_signal(signal.SIGTERM)
                exit_codes[label] = server.wait(timeout=120)
        size = sum(
            os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(version_dir) for f in fs
        )

    print(f"catalogue {args.num_videos:,} videos, d={args.dim}, k={args.k}, index={args.index}; "
          f"model build {build_seconds:.1f}s, export {export_seconds:.1f}s "
          f"({size / 2**20:.0f} MiB), server start to ready "
          + ", ".join(f"{v:.1f}s ({k})" for k, v in starts.items())
          + f", server exit codes {list(exit_codes.values())}")
    print(f"batching: {' '.join(batching)}")
    print("gRPC results identical to the in-process signature on 20 users: "
          + ", ".join(f"{k}: {v}" for k, v in same.items()))
    print(f"{'path':<24} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for path, threads, s in rows:
        print(f"{path:<24} {threads:>7} {s['n']:>8} {s['p50']:>8.2f} {s['p99']:>8.2f} "
              f"{s['rps']:>8.1f}")
    by = {(path, threads): s for path, threads, s in rows}
    ref = by[("in-process signature", 1)]["p50"]
    for label in ("gRPC, batching off", "gRPC, batching on"):
        print(f"1 client, {label}: p50 {by[(label, 1)]['p50']:.2f} ms = in-process "
              f"{ref:.2f} ms + {by[(label, 1)]['p50'] - ref:.2f} ms")
    on, off = by[("gRPC, batching on", args.threads)], by[("gRPC, batching off", args.threads)]
    print(f"{args.threads} clients: batching on {on['rps']:.1f} req/s / off {off['rps']:.1f} "
          f"req/s = {on['rps'] / off['rps']:.2f}x (in-process "
          f"{by[('in-process signature', args.threads)]['rps']:.1f} req/s)")


if __name__ == "__main__":
    main()
