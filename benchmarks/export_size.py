"""Size of an exported version against what serving needs, at 1,000,000 videos x d = 256.

Builds a `YouTubeCandidateModel` over a catalogue of `--videos` string IDs (embedding and user
vector size `--dim`, tower depth 3, watches only), trains it for a few Adam steps on random
batches (so the optimizer's two slots per table exist, as after real training), exports it with
the default ScaNN index, and prints for each model (tied v_j, the default, and a separate
output table, the paper's):

- the version directory's bytes on disk (`du` of every file);
- what serving needs: the index (every saved variable of the index: ScaNN's partitioner,
  hashed codes and the float rows it reorders with), the tower and the input tables;
- their ratio (target: at most 1.15);
- for reference, the bytes of the trained model's own variables with its optimizer's, what
  a version held when it saved the whole Keras model beside the index.

Usage: python benchmarks/export_size.py [--videos 1000000] [--dim 256] [--models tied separate]
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
from tfrs_youtube.export import export_saved_model  # noqa: E402
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel  # noqa: E402
# isort: on


def _bytes(variables) -> int:
    return int(sum(np.prod(v.shape) * v.dtype.size for v in variables))


def _directory_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _measure(tie: bool, videos: int, dim: int, steps: int, batch: int) -> dict:
    vocabulary = [f"v{i}" for i in range(videos)]
    config = YouTubeCandidateConfig(
        video_vocabulary=vocabulary, video_counts=list(range(videos, 0, -1)),
        embedding_dim=dim, output_dim=dim, depth=3, features=["watches"], num_sampled=8192,
        tie_embeddings=tie, seed=0,
    )
    model = YouTubeCandidateModel(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.001))
    rng = np.random.default_rng(0)
    ids = np.char.add("v", rng.integers(0, videos, size=(steps * batch, 11)).astype(str))
    batches = tf.data.Dataset.from_tensor_slices(
        {"watch_history": ids[:, :10], "label": ids[:, 10]}).batch(batch)
    model.fit(batches, epochs=1, verbose=0)
    model_bytes = _bytes(model.variables) + _bytes(model.optimizer.variables())
    tables = _bytes(model.history_pooler.weights)
    tower = _bytes(model.user_tower.weights)
    with tempfile.TemporaryDirectory() as base:
        start = time.perf_counter()
        version = export_saved_model(model, base, warmup=False)
        seconds = time.perf_counter() - start
        total = _directory_bytes(version)
        reader = tf.train.load_checkpoint(str(version / "variables" / "variables"))
        index = 0
        for name, shape in reader.get_variable_to_shape_map().items():
            if name.startswith("index/"):
                dtype = reader.get_variable_to_dtype_map()[name]
                index += int(np.prod(shape)) * max(dtype.size, 1)
    needed = index + tower + tables
    return dict(total=total, index=index, tower=tower, tables=tables, needed=needed,
                ratio=total / needed, model=model_bytes, seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="Adam steps before the export")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=["tied", "separate"],
                        choices=["tied", "separate"])
    args = parser.parse_args()
    mb = 1024.0**2
    print(f"Export size at {args.videos:,} videos x d = {args.dim} (ScaNN index, depth 3)")
    print()
    print("| model | version (MB) | index (MB) | tower (MB) | input tables (MB) | "
          "version / needed | model + optimizer (MB, reference) | export (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        m = _measure(name == "tied", args.videos, args.dim, args.steps, args.batch)
        print(f"| {name} | {m['total'] / mb:,.1f} | {m['index'] / mb:,.1f} | "
              f"{m['tower'] / mb:,.2f} | {m['tables'] / mb:,.1f} | {m['ratio']:.3f} | "
              f"{m['model'] / mb:,.1f} | {m['seconds']:.0f} |", flush=True)
    print()
    print("Target: version / needed <= 1.15 (needed = index + tower + input tables).")


if __name__ == "__main__":
    main()
