"""Top-100 retrieval over 1,000,000 candidates: the export's ScaNN index against brute force.

The index of an export (`tfrs_youtube.index.TopNIndex`, built with `scann_defaults` for the
catalogue, as `export_saved_model(index="scann", k=100, max_history=50)` builds it) over
`[v_j, b_j]` rows (d = 256 plus the bias), queried with `[u, 1]`:

- `scann (SavedModel)`: the ScaNN TF op inside a SavedModel function, saved and reloaded as a
  server loads it, and called through its concrete function as a signature is (the
  measurement the targets name);
- `brute force (TF)`: `tf.linalg.matmul` + `tf.math.top_k` in a tf.function, what the
  `index="brute_force"` export runs;
- `scann (pybind)` with `--pybind`: the raw ScaNN Python searcher with the same settings.

Prints single-query latency p50/p99 (ms), batched queries per second (batch 256), recall@100
against exact, index build time and index size, side by side, then the targets:
ScaNN p50 <= 2 ms at recall@100 >= 0.95 and >= 30x faster than brute force (p50).

Query kinds (`--query-kinds`; "users" and "isotropic" by default):

- "trained" (opt-in: `--query-kinds trained users isotropic`): a trained model's own
  embeddings. `trained_embeddings.py` trains a
  `YouTubeCandidateModel` (d = 256, depth 3, 8,192 sampled negatives, Adagrad, batch 1,024) on
  the synthetic "large" log (1,000,000 videos, 200,000 users, about 10M watches) for
  `--train-steps` steps; the rows are its `[v_j, b_j]` (cold and rarely sampled videos keep
  near-initial rows), the queries `[u, 1]` with u = `model.user_embedding` of holdout users
  (a ReLU output, u >= 0). Its own index is built. The embeddings are cached as an .npz under
  `--cache-dir` keyed by the settings; the first run trains (about 10 minutes on 2 idle
  cores at 0.46 s/step).
  Also prints how much of the catalogue training saw, the holdout hit rate@100 of exact and
  ScaNN results, and how many distinct videos the users' exact top 100 hold: with the default
  1,300 steps (0.13 epoch) the model still ranks mostly by popularity (the same 100 head
  videos for every user), an easy case for the index; more steps make it a harder one.
- "users" and "isotropic", stress cases on a clustered Gaussian catalogue (one topic per 1,000
  videos), both measured against one index: "users" are mixes of topics (as user vectors lean
  towards what the user watches), "isotropic" random directions (the hard case for a
  partitioned index).

Usage: python benchmarks/retrieval.py [--videos 1000000] [--dim 256] [--queries 200]
       [--query-kinds trained users isotropic] [--train-steps 1300]
       [--cache-dir /tmp/tfrs_youtube_bench]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import tfrs_youtube  # noqa: E402, F401  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tfrs_youtube.index import TopNIndex  # noqa: E402
from trained_embeddings import (  # noqa: E402
    DEFAULT_CACHE_DIR,
    DEFAULT_STEPS,
    describe,
    holdout_hits,
    trained_catalogue,
)
# isort: on

K = 100


def catalogue(num_videos: int, dim: int, num_queries: int, seed: int = 0,
              query_kind: str = "isotropic"):
    """Topic-clustered `[v_j, b_j]` rows and `[u, 1]` queries.

    `query_kind="isotropic"`: u ~ N(0, I), no preference for any topic (the hard case).
    `query_kind="users"`: u is like a user of the synthetic generator, a Dirichlet mix of 1 to 3
    topic centres plus N(0, 0.25 I) noise, as user vectors of a trained model lean towards the
    topics the user watches.

    One topic per 1,000 videos, topic centers N(0, I), videos spread N(0, 0.25 I) around
    theirs, biases N(0, 1). Recall depends on this structure: on isotropic Gaussian rows (no
    topics) the same partitioned index misses most of the top 100 (about 0.3 recall@100 at
    100,000 x 256); tune `num_leaves_to_search` for such data.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(1, num_videos // 1000), dim)).astype(np.float32)
    vectors = np.empty((num_videos, dim + 1), np.float32)
    for start in range(0, num_videos, 100_000):  # in chunks, to bound peak memory
        stop = min(start + 100_000, num_videos)
        topics = rng.integers(0, len(centers), stop - start)
        vectors[start:stop, :dim] = centers[topics] + 0.5 * rng.standard_normal(
            (stop - start, dim), dtype=np.float32)
        vectors[start:stop, dim] = rng.normal(size=stop - start)
    if query_kind == "isotropic":
        users = rng.normal(size=(num_queries, dim))
    elif query_kind == "users":
        users = np.empty((num_queries, dim))
        for i in range(num_queries):
            topics = rng.choice(len(centers), size=rng.integers(1, 4), replace=False)
            users[i] = rng.dirichlet(np.ones(len(topics))) @ centers[topics]
        users += 0.5 * rng.standard_normal((num_queries, dim))
    else:
        raise ValueError(f"`query_kind` must be 'isotropic' or 'users'. Received: {query_kind!r}")
    queries = np.concatenate([users, np.ones((num_queries, 1))], axis=1)
    return vectors, queries.astype(np.float32)


def measure(search, queries: np.ndarray, batch_size: int, batches: int) -> dict:
    """Single-query latencies (ms) and batched throughput of `search(queries) -> rows`."""
    for i in range(3):  # warm up (the first ScaNN call rebuilds the searcher from its tensors)
        search(queries[i:i + 1])
    latencies = []
    for i in range(len(queries)):
        start = time.perf_counter()
        search(queries[i:i + 1])
        latencies.append(1000 * (time.perf_counter() - start))
    batch = np.resize(queries, (batch_size, queries.shape[1]))
    search(batch)
    start = time.perf_counter()
    for _ in range(batches):
        search(batch)
    qps = batches * batch_size / (time.perf_counter() - start)
    rows = np.concatenate([search(queries[i:i + 50]) for i in range(0, len(queries), 50)])
    return {"p50": np.percentile(latencies, 50), "p99": np.percentile(latencies, 99),
            "qps": qps, "rows": rows}


def directory_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_brute_force(vectors: np.ndarray, queries: np.ndarray, batches: int) -> dict:
    index = TopNIndex(vectors, "brute_force", num_neighbors=K)
    search = tf.function(lambda q: index.search(q, K)[0]).get_concrete_function(
        tf.TensorSpec([None, vectors.shape[1]], tf.float32))
    result = measure(lambda q: search(tf.constant(q)).numpy(), queries, 256, batches)
    return dict(result, build=0.0, size=vectors.nbytes)


def run_scann(vectors: np.ndarray, query_sets: dict, batches: int) -> tuple[dict, dict]:
    """Builds the exported ScaNN index once and measures every query set through it."""
    start = time.perf_counter()
    index = TopNIndex(vectors, "scann", num_neighbors=K + 50)
    build = time.perf_counter() - start
    print("ScaNN settings:", index.settings)
    module = tf.Module()
    module.index = index
    spec = tf.TensorSpec([None, vectors.shape[1]], tf.float32)
    module.search = tf.function(lambda q: index.search(q, K)[0], input_signature=[spec])
    # The floor of any signature call from Python: a function that only slices its input.
    module.floor = tf.function(lambda q: q[:, :1], input_signature=[spec])
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp,
                            options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
        size = directory_bytes(pathlib.Path(tmp) / "variables")
        loaded = tf.saved_model.load(tmp)
        # Called as a signature is (its concrete function), not through tf.function dispatch.
        search = loaded.search.get_concrete_function(spec)
        floor = loaded.floor.get_concrete_function(spec)
        results = {
            kind: dict(measure(lambda q: search(tf.constant(q)).numpy(), queries, 256,
                               batches), build=build, size=size)
            for kind, queries in query_sets.items()
        }
        queries = next(iter(query_sets.values()))
        floor_p50 = measure(lambda q: floor(tf.constant(q)).numpy(), queries, 256, 1)["p50"]
    print(f"calling a SavedModel function that only slices its input: p50 {floor_p50:.3f} ms "
          "(the part of every single-query time that is not the index)")
    return results, index.settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batches", type=int, default=5, help="timed batches of 256")
    parser.add_argument("--pybind", action="store_true", help="add the raw ScaNN searcher")
    parser.add_argument("--query-kinds", nargs="+", choices=["trained", "users", "isotropic"],
                        default=["users", "isotropic"],
                        help="query sets: a trained model's own embeddings, user-like mixes "
                             "of topics, random directions")
    parser.add_argument("--train-steps", type=int, default=DEFAULT_STEPS,
                        help="training steps of the 'trained' model")
    parser.add_argument("--train-preset", default="large",
                        help="synthetic preset of the 'trained' model (its catalogue size)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR,
                        help="where the trained embeddings are cached")
    args = parser.parse_args()

    if "trained" in args.query_kinds:
        trained = trained_catalogue(args.train_steps, args.queries, args.dim,
                                    args.train_preset, cache_dir=args.cache_dir)
        describe(trained)
        vectors, queries = trained["vectors"], trained["queries"]
        scann_results, settings = run_scann(vectors, {"trained": queries}, args.batches)
        report("trained", vectors, queries, scann_results["trained"], settings, args,
               vectors.nbytes, labels=trained["labels"])
        del trained, vectors, queries, scann_results

    kinds = [kind for kind in args.query_kinds if kind != "trained"]
    if not kinds:
        return
    vectors, _ = catalogue(args.videos, args.dim, 1)
    query_sets = {
        kind: catalogue(args.videos, args.dim, args.queries, query_kind=kind)[1]
        for kind in kinds
    }  # the same seed draws the same catalogue, so the first return value is ignored
    raw_bytes = vectors.nbytes
    # ScaNN as exported: k=100 + max_history=50 neighbours tune the defaults.
    scann_results, settings = run_scann(vectors, query_sets, args.batches)
    for kind, queries in query_sets.items():
        report(kind, vectors, queries, scann_results[kind], settings, args, raw_bytes)


def report(kind, vectors, queries, scann_result, settings, args, raw_bytes,
           labels=None) -> None:
    results: dict[str, dict] = {}
    # Brute force: exact top-100, also the ground truth of recall.
    results["brute force (TF)"] = run_brute_force(vectors, queries, args.batches)
    exact = results["brute force (TF)"]["rows"]
    results["scann (SavedModel)"] = scann_result

    if args.pybind:
        import scann

        start = time.perf_counter()
        searcher = (
            scann.scann_ops_pybind.builder(vectors, K, "dot_product")
            .tree(settings["num_leaves"], settings["num_leaves_to_search"],
                  training_sample_size=settings["training_sample_size"])
            .score_ah(settings["dimensions_per_block"],
                      settings["anisotropic_quantization_threshold"])
            .reorder(settings["reordering_num_neighbors"])
            .build()
        )
        results["scann (pybind)"] = measure(
            lambda q: searcher.search_batched(q, final_num_neighbors=K)[0], queries, 256,
            args.batches)
        results["scann (pybind)"].update(build=time.perf_counter() - start, size=float("nan"))

    print(f"\nTop-{K} over {len(vectors):,} x {vectors.shape[1] - 1} (+ bias) candidates, "
          f"{args.queries} single {kind} queries, batch 256, {os.cpu_count()} cores")
    print(f"{'index':<20}{'p50 ms':>9}{'p99 ms':>9}{'batch qps':>11}{'recall@100':>12}"
          f"{'build s':>9}{'size MB':>10}")
    for name, r in results.items():
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(r["rows"], exact)])
        r["recall"] = recall
        print(f"{name:<20}{r['p50']:>9.3f}{r['p99']:>9.3f}{r['qps']:>11.0f}{recall:>12.4f}"
              f"{r['build']:>9.1f}{r['size'] / 1e6:>10.1f}")
    scann_r, brute_r = results["scann (SavedModel)"], results["brute force (TF)"]
    print(f"raw float32 matrix: {raw_bytes / 1e6:.1f} MB")
    print(f"targets: ScaNN p50 {scann_r['p50']:.3f} ms (<= 2), recall@100 "
          f"{scann_r['recall']:.4f} (>= 0.95), speed-up over brute force p50 "
          f"{brute_r['p50'] / scann_r['p50']:.1f}x (>= 30), batched "
          f"{scann_r['qps'] / brute_r['qps']:.1f}x")
    if labels is not None:
        print(f"holdout hit rate@{K} (held-out watch in the top {K}, watched not excluded): "
              + ", ".join(f"{name} {holdout_hits(r['rows'], labels):.3f}"
                          for name, r in results.items()))
        # An under-trained model ranks by popularity (the bias): every user gets the same
        # top 100, which any index finds easily.
        print(f"distinct videos in the exact top {K} of the {len(exact)} users: "
              f"{len(np.unique(exact)):,}")


if __name__ == "__main__":
    main()
