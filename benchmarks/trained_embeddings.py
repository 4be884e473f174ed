"""A trained model's own index and queries: `[v_j, b_j]` rows and `[u, 1]` holdout users.

Trains a `YouTubeCandidateModel` (watch history only, d = `dim`, tower depth 3, sampled
softmax with `num_sampled` log-uniform negatives, Adagrad, batch 1,024) on the synthetic
`preset` log ("large": 1,000,000 videos, 200,000 users, about 10M watches) for a fixed number
of steps, then reads the index rows as `export_saved_model` does
(`model.candidates.output_embeddings` and `.output_biases`) and the queries as
`model.user_embedding` of holdout users (the output of a ReLU layer, so u >= 0). The
catalogue is every video of the generator: videos that no user watched in the log are appended
with count 0 (cold videos, still in a real catalogue).

Training uses integer video IDs (rows of the frequency-sorted vocabulary), which is the same
network as string IDs without the per-step string lookup. Results are cached as an .npz under
`cache_dir`, keyed by every setting, so a rerun skips the data and the training.

With `--sweep` (run as a script) it sweeps ScaNN settings with the pybind searcher on the
cached embeddings and prints recall@100 and single-query p50 beside brute force.

Usage: python benchmarks/trained_embeddings.py [--train-steps 1300] [--sweep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import tfrs_youtube  # noqa: E402, F401  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
# isort: on

DEFAULT_STEPS = 1300  # 0.46 s/step on 2 idle cores: about 10 minutes (35 on a shared machine)
DEFAULT_CACHE_DIR = "/tmp/tfrs_youtube_bench"


def _settings(**kwargs: Any) -> tuple[dict, str]:
    settings = dict(kwargs, version=1)
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return settings, key


def trained_catalogue(
    steps: int = DEFAULT_STEPS,
    num_queries: int = 200,
    dim: int = 256,
    preset: str = "large",
    seed: int = 0,
    batch_size: int = 1024,
    num_sampled: int = 8192,
    learning_rate: float = 0.05,
    examples_per_user: int = 10,
    cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
) -> dict[str, Any]:
    """Trains (or loads from the cache) and returns the trained index and queries.

    Returns a dict: `vectors` float32 [num_videos, dim + 1] (`[v_j, b_j]`), `queries` float32
    [num_queries, dim + 1] (`[u, 1]` of holdout users), `labels` int64 [num_queries] (the row
    of each user's held-out watch), `info` (counts and timings) and `cached` (bool).
    """
    settings, key = _settings(
        steps=steps, num_queries=num_queries, dim=dim, preset=preset, seed=seed,
        batch_size=batch_size, num_sampled=num_sampled, learning_rate=learning_rate,
        examples_per_user=examples_per_user)
    path = pathlib.Path(cache_dir) / f"trained_{preset}_{steps}steps_{key}.npz"
    if path.exists():
        with np.load(path) as f:
            return {"vectors": f["vectors"], "queries": f["queries"], "labels": f["labels"],
                    "info": json.loads(str(f["info"])), "cached": True, "path": str(path)}
    vectors, queries, labels, info = _train(**settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, vectors=vectors, queries=queries, labels=labels, info=json.dumps(info))
    tmp.replace(path)
    return {"vectors": vectors, "queries": queries, "labels": labels, "info": info,
            "cached": False, "path": str(path)}


def _train(steps, num_queries, dim, preset, seed, batch_size, num_sampled, learning_rate,
           examples_per_user, version):
    from tfrs_youtube.data import Vocabulary, build_examples, generate_synthetic_log
    from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

    del version
    start = time.perf_counter()
    synthetic = generate_synthetic_log(preset, seed=seed)
    data = build_examples(synthetic.log, max_history=50, examples_per_user=examples_per_user,
                          seed=seed)
    vocab = data.video_vocab
    cold = np.setdiff1d(synthetic.truth.video_ids.astype(str), vocab.ids.astype(str))
    vocab = Vocabulary(np.r_[vocab.ids, cold.astype(object)],
                       np.r_[vocab.counts, np.zeros(len(cold), np.int64)])
    history = vocab.index(data.train.features["watch_history"], unknown=-1)  # "" -> -1 pad
    label = vocab.index(data.train.features["label"])
    data_seconds = time.perf_counter() - start
    print(f"  data: {len(vocab):,} videos ({len(cold):,} never watched in the log), "
          f"{len(label):,} training examples ({examples_per_user} per user at most), "
          f"{data_seconds:.0f} s", flush=True)

    rng = np.random.default_rng(seed)
    order = np.resize(rng.permutation(len(label)), steps * batch_size)  # one shuffled pass
    history, label = history[order], label[order]

    tf.keras.utils.set_random_seed(seed)
    config = YouTubeCandidateConfig(
        num_videos=len(vocab), video_counts=vocab.counts.tolist(), embedding_dim=dim,
        output_dim=dim, depth=3, max_history=50, features=["watches"],
        num_sampled=num_sampled, sampler="log_uniform", metrics_k=[], seed=seed)
    model = YouTubeCandidateModel(config)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
    dataset = tf.data.Dataset.from_tensor_slices(
        {"watch_history": history, "label": label}).batch(batch_size).prefetch(2)
    losses: list[float] = []
    tick = time.perf_counter()

    def progress(batch, logs):
        losses.append(float(logs["loss"]))  # tfrs.Model logs each step's own loss
        if (batch + 1) % 100 == 0 or batch + 1 == steps:
            print(f"  step {batch + 1}/{steps}: loss {np.mean(losses[-100:]):.3f}, "
                  f"{(time.perf_counter() - tick) / (batch + 1):.3f} s/step", flush=True)

    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,
              callbacks=[tf.keras.callbacks.LambdaCallback(on_batch_end=progress)])
    train_seconds = time.perf_counter() - tick

    vectors = np.concatenate(  # as export_saved_model reads them
        [model.candidates.output_embeddings.numpy(),
         model.candidates.output_biases.numpy()[:, None]], axis=1).astype(np.float32)
    users = rng.choice(len(data.holdout), size=min(num_queries, len(data.holdout)),
                       replace=False)
    held = vocab.index(data.holdout.features["watch_history"][users], unknown=-1)
    u = model.user_embedding({"watch_history": tf.constant(held)}).numpy()
    queries = np.concatenate([u, np.ones((len(u), 1))], axis=1).astype(np.float32)
    labels = vocab.index(data.holdout.features["label"][users])

    seen_labels = np.unique(label)
    seen_any = np.unique(np.r_[seen_labels, history[history >= 0]])
    info = {
        "num_videos": len(vocab), "cold_videos": len(cold), "train_examples": int(len(order)),
        "label_videos": int(len(seen_labels)), "history_or_label_videos": int(len(seen_any)),
        # Biases start at 0 and every gradient moves them: b_j != 0 marks rows a step touched
        # (as a label or a sampled negative).
        "touched_rows": int(np.count_nonzero(vectors[:, -1])),
        "data_seconds": data_seconds, "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / steps,
        "first_loss": float(np.mean(losses[:50])), "last_loss": float(np.mean(losses[-50:])),
    }
    return vectors, queries, labels, info


def describe(trained: dict[str, Any]) -> None:
    """Prints where the embeddings came from, how much of the catalogue training saw, stats."""
    info, vectors, queries = trained["info"], trained["vectors"], trained["queries"]
    n = info["num_videos"]
    print(f"trained embeddings: {'cache used' if trained['cached'] else 'trained now'} "
          f"({trained['path']})")
    print(f"  training: {info['train_examples']:,} examples, "
          f"{info['train_seconds']:.0f} s ({info['seconds_per_step']:.3f} s/step)"
          + (f", loss (mean of 50 steps) {info['first_loss']:.3f} -> {info['last_loss']:.3f}"
             if "first_loss" in info else ""))
    print(f"  videos seen in training, of {n:,}: {info['label_videos']:,} as labels "
          f"({info['label_videos'] / n:.1%}), {info['history_or_label_videos']:,} as labels "
          f"or in histories ({info['history_or_label_videos'] / n:.1%}); "
          f"{info['touched_rows']:,} rows touched by any gradient incl. sampled negatives "
          f"({info['touched_rows'] / n:.1%}); {info['cold_videos']:,} never watched in the log")
    u, v, b = queries[:, :-1], vectors[:, :-1], vectors[:, -1]
    norms = np.linalg.norm(v, axis=1)
    touched = b != 0
    print(f"  u: {np.mean(u == 0):.1%} zero coordinates (ReLU), |u| mean "
          f"{np.linalg.norm(u, axis=1).mean():.2f}; |v_j| mean {norms[touched].mean():.3f} "
          f"touched, {norms[~touched].mean() if (~touched).any() else float('nan'):.3f} "
          f"untouched; b_j in [{b.min():.2f}, {b.max():.2f}]")


def holdout_hits(rows: np.ndarray, labels: np.ndarray) -> float:
    """Share of users whose held-out video is among `rows` (watched videos not excluded)."""
    return float(np.mean([label in set(r) for r, label in zip(rows, labels)]))


def sweep(vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, builds: list[dict],
          searches: list[tuple[int, int]], k: int = 100) -> list[dict]:
    """Recall@k and single-query latency of pybind ScaNN over a grid of settings.

    One searcher per entry of `builds` (`num_leaves`, `anisotropic_quantization_threshold`,
    `dimensions_per_block`), each searched with every `(num_leaves_to_search,
    reordering_num_neighbors)` of `searches` (query-time arguments, the same as the config's).
    """
    import scann

    results = []
    for s in builds:
        start = time.perf_counter()
        searcher = scann.scann_ops_pybind.builder(vectors, k, "dot_product").tree(
            s["num_leaves"], max(leaves for leaves, _ in searches),
            training_sample_size=min(len(vectors), 250_000), training_iterations=12,
        ).score_ah(
            s["dimensions_per_block"], s["anisotropic_quantization_threshold"],
            training_sample_size=min(len(vectors), 250_000),
        ).reorder(max(reorder for _, reorder in searches)).build()
        build = time.perf_counter() - start
        for leaves, reorder in searches:
            leaves = min(leaves, s["num_leaves"])

            def search(q, leaves=leaves, reorder=reorder):
                return searcher.search(q, final_num_neighbors=k, leaves_to_search=leaves,
                                       pre_reorder_num_neighbors=reorder)[0]

            for q in queries[:3]:
                search(q)
            latencies, rows = [], []
            for q in queries:
                tick = time.perf_counter()
                rows.append(search(q))
                latencies.append(1000 * (time.perf_counter() - tick))
            recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(rows, exact)])
            r = dict(s, num_leaves_to_search=leaves, reordering_num_neighbors=reorder,
                     recall=recall, p50=np.percentile(latencies, 50),
                     p99=np.percentile(latencies, 99), build=build)
            results.append(r)
            print(f"| {r['num_leaves']} | {leaves} | {reorder} | "
                  f"{r['anisotropic_quantization_threshold']} | {r['dimensions_per_block']} | "
                  f"{recall:.4f} | {r['p50']:.3f} | {r['p99']:.3f} | {build:.0f} |", flush=True)
    return results


def _exact(vectors: np.ndarray, queries: np.ndarray, k: int = 100) -> tuple[np.ndarray, float]:
    table = tf.constant(vectors)
    search = tf.function(lambda q: tf.math.top_k(tf.linalg.matmul(q, table, transpose_b=True),
                                                 k)[1])
    search(tf.constant(queries[:1]))
    latencies = []
    for q in queries:
        tick = time.perf_counter()
        search(tf.constant(q[None])).numpy()
        latencies.append(1000 * (time.perf_counter() - tick))
    rows = np.concatenate([search(tf.constant(queries[i:i + 50])).numpy()
                           for i in range(0, len(queries), 50)])
    return rows, float(np.percentile(latencies, 50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--train-preset", default="large")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--sweep", action="store_true", help="sweep ScaNN settings (pybind)")
    parser.add_argument("--builds", default=None,
                        help="JSON list of {num_leaves, anisotropic_quantization_threshold, "
                             "dimensions_per_block} dicts, one searcher each")
    parser.add_argument("--searches", default=None,
                        help="JSON list of [num_leaves_to_search, reordering_num_neighbors]")
    args = parser.parse_args()
    trained = trained_catalogue(args.train_steps, args.queries, args.dim, args.train_preset,
                                cache_dir=args.cache_dir)
    describe(trained)
    if not args.sweep:
        return
    vectors, queries = trained["vectors"], trained["queries"]
    exact, brute_p50 = _exact(vectors, queries)
    print(f"brute force (TF) p50 {brute_p50:.3f} ms; holdout hit@100 exact "
          f"{holdout_hits(exact, trained['labels']):.3f}")
    builds = json.loads(args.builds) if args.builds else [
        dict(num_leaves=1000, anisotropic_quantization_threshold=0.2, dimensions_per_block=2),
    ]
    searches = json.loads(args.searches) if args.searches else [
        [100, 600], [100, 1500], [200, 600], [200, 1500], [300, 1500], [300, 3000],
    ]
    print("| num_leaves | to_search | reorder | aniso | dims/block | recall@100 | p50 ms "
          "| p99 ms | build s |")
    print("|---|---|---|---|---|---|---|---|---|")
    sweep(vectors, queries, exact, builds, [tuple(x) for x in searches])


if __name__ == "__main__":
    main()
