"""Training throughput: sampled softmax against full softmax and `tf.nn.sampled_softmax_loss`.

The paper's configuration scaled to one machine: 1,000,000 videos, d = 256, tower depth 3
(1024-512-256), 50-watch histories, 8,192 sampled negatives, batch 1,024, Adagrad. Each variant
runs in its own subprocess (so each peak RSS is its own) on the same synthetic batches:

- `sampled`: `YouTubeCandidateModel` with `SampledSoftmaxRetrieval` (log-uniform, logQ, hits
  removed);
- `full`: the same model with `num_sampled=None` (softmax over all 1,000,000 videos);
- `tf_nn`: the same tower and tables, loss from `tf.nn.sampled_softmax_loss` (log-uniform,
  hits removed), the reference the sampled step must not be slower than.

The network is the paper's (`PAPER_ARCHITECTURE`: mean-pooled history, plain dot product, no
dropout) unless `--architecture default` selects the package's defaults (recency pooling,
cosine over a temperature, dropout).

Usage: python benchmarks/train_throughput.py [--videos 1000000] [--steps 20] [--full-steps 3]
    [--architecture paper|default]
Prints examples/second and peak memory side by side, and the two ratios the targets name.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _batches(num_videos: int, batch_size: int, history: int, count: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)

    def zipf(shape):  # log-uniform ranks, like a frequency-sorted vocabulary
        ranks = np.floor(np.exp(rng.random(shape) * np.log(num_videos + 1))) - 1
        return np.clip(ranks, 0, num_videos - 1).astype(np.int64)

    out = []
    for _ in range(count):
        hist = zipf((batch_size, history))
        lengths = rng.integers(1, history + 1, size=batch_size)
        hist[np.arange(history)[None, :] >= lengths[:, None]] = -1
        out.append({"watch_history": hist, "label": zipf((batch_size,))})
    return out


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    import tensorflow as tf

    import tfrs_youtube  # noqa: F401
    from tfrs_youtube.config import PAPER_ARCHITECTURE
    from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

    tf.keras.utils.set_random_seed(0)
    architecture = PAPER_ARCHITECTURE if args.architecture == "paper" else {}
    config = YouTubeCandidateConfig(
        num_videos=args.videos,
        embedding_dim=args.dim,
        output_dim=args.dim,
        depth=3,
        max_history=args.history,
        features=["watches"],
        num_sampled=None if variant == "full" else args.num_sampled,
        sampler="log_uniform",
        metrics_k=[],
        **architecture,
    )
    model = YouTubeCandidateModel(config)
    optimizer = tf.keras.optimizers.Adagrad(0.05)

    if variant == "tf_nn":
        def loss_fn(batch):
            user = model.user_embedding(batch, training=True)
            labels = tf.reshape(batch["label"], [-1, 1])
            return tf.reduce_mean(
                tf.nn.sampled_softmax_loss(
                    weights=model.candidates.output_embeddings,
                    biases=model.candidates.output_biases,
                    labels=labels,
                    inputs=user,
                    num_sampled=args.num_sampled,
                    num_classes=args.videos,
                    remove_accidental_hits=True,
                )
            )
    else:
        def loss_fn(batch):
            return model.compute_loss(batch, training=True)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(batch)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    batches = [
        {k: tf.constant(v) for k, v in b.items()}
        for b in _batches(args.videos, args.batch_size, args.history, 4, seed=1)
    ]
    steps = args.full_steps if variant == "full" else args.steps
    warmup = 1 if variant == "full" else 3
    for i in range(warmup):
        step(batches[i % len(batches)]).numpy()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(batches[i % len(batches)])
    loss.numpy()
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "variant": variant,
        "steps": steps,
        "seconds_per_step": seconds / steps,
        "examples_per_second": steps * args.batch_size / seconds,
        "peak_rss_mib": peak_mib,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--num-sampled", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument("--variant", choices=["sampled", "full", "tf_nn"])
    parser.add_argument("--architecture", choices=["paper", "default"], default="paper",
                        help="the paper's network (new options off) or the package defaults")
    args = parser.parse_args()

    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return 0

    print(
        f"Training throughput: {args.videos:,} videos, d={args.dim}, depth 3, "
        f"history {args.history}, {args.num_sampled:,} sampled, batch {args.batch_size:,}, "
        f"{args.architecture} architecture",
        flush=True,
    )
    results = {}
    # Interleaved order so slow drift on a shared machine does not favour one variant.
    for variant in ("tf_nn", "sampled", "full"):
        print(f"  running {variant} ...", flush=True)
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k != "variant" and v is not None
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])

    print()
    print("| variant | s/step | examples/s | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for name in ("sampled", "tf_nn", "full"):
        r = results[name]
        print(
            f"| {name} | {r['seconds_per_step']:.3f} | {r['examples_per_second']:,.0f} | "
            f"{r['peak_rss_mib']:,.0f} |"
        )
    speedup = results["sampled"]["examples_per_second"] / results["full"]["examples_per_second"]
    vs_tf = results["sampled"]["examples_per_second"] / results["tf_nn"]["examples_per_second"]
    print()
    print(f"sampled / full softmax throughput: {speedup:.1f}x (target >= 25x)")
    print(f"sampled / tf.nn.sampled_softmax_loss throughput: {vs_tf:.2f}x (target >= 1.0x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
