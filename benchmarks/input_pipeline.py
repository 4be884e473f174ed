"""Input throughput: the in-memory examples against the same examples streamed from TFRecords.

On the examples of one log (`--data`: MovieLens files or "synthetic" with `--preset`), reads
`--epochs` shuffled epochs of batches of the model's input keys through:

- `to_dataset`: `ExampleSet.to_dataset(shuffle=True)`, the in-memory input as it was before
  the training stream existed (the reference);
- `step stream`: the stream `pipeline.train` reads for in-memory examples (every epoch shuffled
  with its own seed, so a resumed run replays the same batches);
- `tfrecord`: `examples_dataset` over the examples directory written by `write_examples`
  (interleaved shard reads, shuffle buffer, vectorized parse, prefetch).

Prints the best examples/s of each over `--rounds` interleaved rounds, in one run, with the
ratio to the reference, and the examples/s of `model.fit` of the default model on each input
(`--fit-rounds`); the machine is shared, so the ratios are what counts.

Usage: python benchmarks/input_pipeline.py [--data ../shared/data/ml-100k] [--batch-size 256]
       [--epochs 3] [--shards 8]
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
from tfrs_youtube import pipeline  # noqa: E402
from tfrs_youtube.config import YouTubeCandidateConfig  # noqa: E402
from tfrs_youtube.data.records import examples_dataset, write_examples  # noqa: E402
from tfrs_youtube.models import YouTubeCandidateModel  # noqa: E402
# isort: on

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def _rate(make, epochs: int, examples: int) -> float:
    """Examples per second of iterating every batch of `make()` (a first pass warms up)."""
    for _ in make().take(2):
        pass
    start = time.perf_counter()
    for _ in make():
        pass
    return epochs * examples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, best kept")
    parser.add_argument("--fit-rounds", type=int, default=2,
                        help="interleaved rounds of training the default model on each input "
                        "(0: read only)")
    args = parser.parse_args()
    spec = pipeline.DataSpec(source=args.data, preset=args.preset)
    data = pipeline.prepare_data(spec)
    model = YouTubeCandidateModel(YouTubeCandidateConfig.from_training_data(data))
    keys = sorted(set(model.feature_layers) | {"label"})
    n, batch, epochs = len(data.train), args.batch_size, args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_examples(data, pathlib.Path(tmp) / "examples", shards=args.shards)

        def to_dataset():
            return data.train.to_dataset(batch_size=batch, shuffle=True, keys=keys).repeat(
                epochs)

        def step_stream():
            return pipeline._step_dataset(data.train, keys, batch, 0, epochs, 0)

        def tfrecord():
            return examples_dataset(directory, "train", batch_size=batch, shuffle=True,
                                    keys=keys).repeat(epochs)

        variants = (("to_dataset", to_dataset), ("step stream", step_stream),
                    ("tfrecord", tfrecord))
        rates = {name: 0.0 for name, _ in variants}
        for _ in range(args.rounds):  # interleaved rounds, best of each: the load varies
            for name, make in variants:
                rates[name] = max(rates[name], _rate(make, epochs, n))
        fit = {name: 0.0 for name, _ in variants}
        if args.fit_rounds:
            import tensorflow as tf

            for _ in range(args.fit_rounds):  # what the input costs a training epoch
                for name, make in variants:
                    tf.keras.utils.set_random_seed(0)
                    model = YouTubeCandidateModel(YouTubeCandidateConfig.from_training_data(data))
                    model.compile(optimizer=tf.keras.optimizers.Adam(0.003))
                    model.fit(make().take(20), epochs=1, verbose=0)  # traces the step
                    start = time.perf_counter()
                    model.fit(make(), epochs=1, verbose=0)
                    fit[name] = max(fit[name], epochs * n / (time.perf_counter() - start))
    print(f"Input throughput: {n:,} training examples of {args.data}, batch {batch}, "
          f"{epochs} epochs, best of {args.rounds} rounds, keys {keys}")
    print()
    print("| input | read, examples/s | vs to_dataset | model.fit, examples/s | vs to_dataset |")
    print("|---|---|---|---|---|")
    for name, rate in rates.items():
        trained = (f"{fit[name]:,.0f} | {fit[name] / fit['to_dataset']:.2f}x"
                   if args.fit_rounds else "- | -")
        print(f"| {name} | {rate:,.0f} | {rate / rates['to_dataset']:.2f}x | {trained} |")


if __name__ == "__main__":
    main()
