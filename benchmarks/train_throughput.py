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

Further rows, same run:

- `--optimizer adam lazy_adam adagrad sgd` (any of them): the `sampled` step with each
  optimizer (`pipeline.make_optimizer`; learning rate 0.05 for Adagrad and SGD, 0.003 for Adam
  and lazy Adam), beside the Adagrad `sampled` reference. Adam decays its moments over every
  row of both tables each step (O(videos × d)); lazy Adam and Adagrad touch only the rows of
  the step's gradients, so the catalogue-size dependence shows by running two `--videos`.
- `--strategy mirrored`: every variant under `tf.distribute.MirroredStrategy` over 2 logical
  CPU devices (configured before TensorFlow starts), the batch split between them.
- `--input tfrecord`: batches read back by `tfrs_youtube.data.records.examples_dataset` from
  TFRecord shards that `write_examples` wrote (ids, the same synthetic examples), instead of
  tensors in memory.
- The step's arithmetic: GFLOP per step from the shapes (tower matmuls and the user × negatives
  (or full catalogue) logits matmul, forward and backward = 3 × the forward's 2·m·k·n;
  embedding gathers and optimizer updates counted as bytes, not FLOPs) and the achieved GFLOP/s
  as a fraction of this machine's float32 matmul peak, measured in the same run (best of
  several 2048×2048×2048 `tf.matmul`).

Usage: python benchmarks/train_throughput.py [--videos 1000000] [--steps 20] [--full-steps 3]
    [--architecture paper|default] [--optimizer NAME ...] [--strategy default|mirrored]
    [--input memory|tfrecord] [--references tf_nn full]
Prints examples/second and peak memory side by side, and the two ratios the targets name.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OPTIMIZERS = ("adam", "lazy_adam", "adagrad", "sgd")
LEARNING_RATES = {"adam": 0.003, "lazy_adam": 0.003, "adagrad": 0.05, "sgd": 0.05}
REFERENCE_OPTIMIZER = "adagrad"  # the reference rows' optimizer, as this benchmark always had


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


def _logical_cpus(count: int) -> None:
    """Splits the CPU into `count` logical devices; must run before TensorFlow starts."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def matmul_peak(args: argparse.Namespace) -> dict:
    """Best float32 GFLOP/s of an n×n×n `tf.matmul` over several timed runs."""
    import tensorflow as tf

    n = args.matmul_size
    a = tf.random.stateless_normal([n, n], seed=[0, 1])
    b = tf.random.stateless_normal([n, n], seed=[0, 2])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(args.matmul_repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return {"variant": "matmul", "size": n, "seconds": best,
            "gflop_per_second": 2 * n**3 / best / 1e9}


def _tfrecord_batches(args: argparse.Namespace, batches: list[dict], tmp: str):
    """The same synthetic batches, written by `records.write_examples` and streamed back."""
    try:
        from tfrs_youtube.data import records
    except ImportError as error:
        raise SystemExit(
            "--input tfrecord needs tfrs_youtube.data.records (write_examples, "
            f"examples_dataset), which is not importable here: {error}"
        ) from error
    missing = [n for n in ("write_examples", "examples_dataset") if not hasattr(records, n)]
    if missing:
        raise SystemExit(
            f"--input tfrecord needs tfrs_youtube.data.records.{' and '.join(missing)}, "
            "not there yet (another change adds them); run with --input memory."
        )
    import numpy as np

    from tfrs_youtube.data.example_sets import ExampleSet, TrainingData
    from tfrs_youtube.data.vocab import Vocabulary

    def as_set(rows: list[dict]) -> ExampleSet:
        history = np.concatenate([b["watch_history"] for b in rows])
        label = np.concatenate([b["label"] for b in rows])
        strings = np.where(history >= 0, history.astype(str), "").astype(object)
        n = len(label)
        return ExampleSet({
            "watch_history": strings, "label": label.astype(str).astype(object),
            "example_age": np.zeros(n, np.float32),
            "user_id": np.arange(n).astype(str).astype(object),
            "timestamp": np.arange(n, dtype=np.float64),
        }, seen=None)

    train = as_set(batches)
    holdout = as_set(batches[:1])
    holdout.seen = [np.array([], dtype=object)] * len(holdout)
    ids = np.arange(args.videos).astype(str).astype(object)  # row i = video i = the model's id
    data = TrainingData(train, holdout, Vocabulary(ids, np.ones(args.videos, np.int64)), None,
                        {}, {}, (0.0, 1.0))
    directory = records.write_examples(data, os.path.join(tmp, "examples"), shards=4)
    return records.examples_dataset(
        directory, "train", batch_size=args.batch_size, shuffle=False,
        keys=["watch_history", "label"], ids=True, drop_remainder=True,
    )


def step_arithmetic(model, args: argparse.Namespace, variant: str) -> dict:
    """GFLOP per step from the shapes: 3 × forward matmul FLOPs (forward, and the backward's
    gradients to inputs and to weights); gathered rows as bytes."""
    tables = [v for v in model.trainable_variables if v.shape.rank == 2
              and v.shape[0] >= args.videos]
    kernels = [v for v in model.trainable_variables if v.shape.rank == 2
               and v.shape[0] < args.videos]
    batch, dim = args.batch_size, args.dim
    tower = sum(2 * batch * int(k.shape[0]) * int(k.shape[1]) for k in kernels)
    logits_columns = args.videos if variant == "full" else args.num_sampled + 1
    logits = 2 * batch * dim * logits_columns
    rows = batch * args.history + (args.videos if variant == "full" else args.num_sampled + batch)
    return {
        "gflop_tower": 3 * tower / 1e9,
        "gflop_logits": 3 * logits / 1e9,
        "gflop": 3 * (tower + logits) / 1e9,
        "gathered_mib": rows * dim * 4 / 2**20,
        "table_mib": sum(int(t.shape[0]) * int(t.shape[1]) for t in tables) * 4 / 2**20,
    }


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    import tensorflow as tf

    if args.strategy == "mirrored":
        _logical_cpus(2)
    if variant == "matmul":
        return matmul_peak(args)

    import tfrs_youtube  # noqa: F401
    from tfrs_youtube import pipeline
    from tfrs_youtube.config import PAPER_ARCHITECTURE
    from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

    tf.keras.utils.set_random_seed(0)
    strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
                if args.strategy == "mirrored" else tf.distribute.get_strategy())
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
    name = args.run_optimizer
    with strategy.scope():
        model = YouTubeCandidateModel(config)
        optimizer = pipeline.make_optimizer(name, LEARNING_RATES[name])

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

    def replica_step(batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(batch)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function
    def step(batch):
        if args.strategy == "mirrored":
            losses = strategy.run(replica_step, args=(batch,))
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)
        return replica_step(batch)

    arrays = _batches(args.videos, args.batch_size, args.history, 4, seed=1)
    batches = [{k: tf.constant(v) for k, v in b.items()} for b in arrays]
    with strategy.scope():  # variables (and slots) made here, outside the timed steps
        loss_fn(batches[0])
        optimizer.build(model.trainable_variables)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if args.input == "tfrecord":
            source = _tfrecord_batches(args, arrays, tmp).repeat().prefetch(2)
        else:
            source = tf.data.Dataset.from_tensor_slices(
                {k: tf.stack([b[k] for b in batches]) for k in batches[0]}
            ).repeat()
        if args.strategy == "mirrored":
            # Re-batched so the strategy sees the global batch and splits it in two.
            source = strategy.experimental_distribute_dataset(
                source.unbatch().batch(args.batch_size, drop_remainder=True)
            )
        if args.input == "memory" and args.strategy != "mirrored":
            iterator = itertools.cycle(batches)  # today's path: the tensors themselves
        else:
            iterator = iter(source)

        steps = args.full_steps if variant == "full" else args.steps
        warmup = 1 if variant == "full" else 3
        for _ in range(warmup):
            step(next(iterator)).numpy()
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(next(iterator))
        loss.numpy()
        seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "variant": variant,
        "optimizer": name,
        "steps": steps,
        "seconds_per_step": seconds / steps,
        "examples_per_second": steps * args.batch_size / seconds,
        "peak_rss_mib": peak_mib,
        **step_arithmetic(model, args, variant),
    }


def _child(args: argparse.Namespace, variant: str, optimizer: str) -> dict:
    forwarded = ("videos", "dim", "history", "num_sampled", "batch_size", "steps", "full_steps",
                 "architecture", "strategy", "input", "matmul_size", "matmul_repeats")
    cmd = [sys.executable, __file__, "--variant", variant, "--run-optimizer", optimizer] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}" for k in forwarded
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{variant} with {optimizer} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--num-sampled", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument("--variant", choices=["sampled", "full", "tf_nn", "matmul"])
    parser.add_argument("--architecture", choices=["paper", "default"], default="paper",
                        help="the paper's network (new options off) or the package defaults")
    parser.add_argument("--optimizer", nargs="+", choices=OPTIMIZERS, default=[],
                        help="also time the sampled step with each of these optimizers")
    parser.add_argument("--run-optimizer", choices=OPTIMIZERS, default=REFERENCE_OPTIMIZER,
                        help=argparse.SUPPRESS)  # one subprocess's optimizer
    parser.add_argument("--strategy", choices=["default", "mirrored"], default="default")
    parser.add_argument("--input", choices=["memory", "tfrecord"], default="memory")
    parser.add_argument("--references", nargs="*", choices=["tf_nn", "full"],
                        default=["tf_nn", "full"],
                        help="the reference variants beside `sampled` (none: only sampled)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--matmul-repeats", type=int, default=5)
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
    if args.strategy != "default" or args.input != "memory":
        print(f"strategy {args.strategy}, input {args.input}", flush=True)
    results = {}
    # Interleaved order so slow drift on a shared machine does not favour one variant.
    for variant in ("tf_nn", "sampled", "full"):
        if variant != "sampled" and variant not in args.references:
            continue
        print(f"  running {variant} ...", flush=True)
        results[variant] = _child(args, variant, REFERENCE_OPTIMIZER)
        print(f"    {results[variant]['seconds_per_step']:.3f} s/step", flush=True)
    by_optimizer = {REFERENCE_OPTIMIZER: results["sampled"]}
    for name in dict.fromkeys(args.optimizer):
        if name not in by_optimizer:
            print(f"  running sampled with {name} ...", flush=True)
            by_optimizer[name] = _child(args, "sampled", name)
            print(f"    {by_optimizer[name]['seconds_per_step']:.3f} s/step", flush=True)
    print("  running matmul peak ...", flush=True)
    peak = _child(args, "matmul", REFERENCE_OPTIMIZER)

    print()
    print("| variant | s/step | examples/s | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for name in ("sampled", "tf_nn", "full"):
        if name not in results:
            continue
        r = results[name]
        print(
            f"| {name} | {r['seconds_per_step']:.3f} | {r['examples_per_second']:,.0f} | "
            f"{r['peak_rss_mib']:,.0f} |"
        )
    print()
    if "full" in results:
        speedup = (results["sampled"]["examples_per_second"]
                   / results["full"]["examples_per_second"])
        print(f"sampled / full softmax throughput: {speedup:.1f}x (target >= 25x)")
    if "tf_nn" in results:
        vs_tf = results["sampled"]["examples_per_second"] / results["tf_nn"]["examples_per_second"]
        print(f"sampled / tf.nn.sampled_softmax_loss throughput: {vs_tf:.2f}x (target >= 1.0x)")

    if args.optimizer:
        reference = results["sampled"]["seconds_per_step"]
        print()
        print(f"Optimizers, sampled step ({REFERENCE_OPTIMIZER} = the reference above):")
        print("| optimizer | s/step | examples/s | s/step vs adagrad | peak RSS (MiB) |")
        print("|---|---|---|---|---|")
        for name in dict.fromkeys(args.optimizer):
            r = by_optimizer[name]
            print(
                f"| {name} | {r['seconds_per_step']:.3f} | {r['examples_per_second']:,.0f} | "
                f"{r['seconds_per_step'] / reference:.2f}x | {r['peak_rss_mib']:,.0f} |"
            )

    print()
    print(f"Step arithmetic (float32 matmul peak this run: {peak['gflop_per_second']:.0f} GFLOP/s, "
          f"best of {args.matmul_repeats} {peak['size']}^3 tf.matmul):")
    print("| variant | optimizer | GFLOP/step (tower + logits) | rows gathered (MiB) | "
          "GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|")
    rows = [(n, results[n]) for n in ("sampled", "tf_nn", "full") if n in results]
    rows += [("sampled", r) for n, r in by_optimizer.items() if n != REFERENCE_OPTIMIZER]
    for name, r in rows:
        achieved = r["gflop"] / r["seconds_per_step"]
        print(
            f"| {name} | {r['optimizer']} | {r['gflop']:.1f} ({r['gflop_tower']:.1f} + "
            f"{r['gflop_logits']:.1f}) | {r['gathered_mib']:,.0f} | {achieved:.0f} | "
            f"{achieved / peak['gflop_per_second']:.0%} |"
        )
    table_mib = results["sampled"]["table_mib"]
    print(f"(embedding tables {table_mib:,.0f} MiB: dense Adam reads and writes the tables, m and "
          f"v, at least 6 x {table_mib:,.0f} MiB per step, whatever the rows gathered)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
