"""Full-catalogue evaluation at scale: chunked `model_ranks` against the old dense path.

For N = 100,000 and 1,000,000 videos (d = 64) a fresh process per measurement builds an
untrained `YouTubeCandidateModel` (same seed, so the same weights), ranks a leave-last-out
holdout with 10 earlier watches per user, and reports users per second and the peak RSS growth
of the ranking call (VmHWM, reset through /proc/self/clear_refs after a warm-up). "dense" is
the implementation before chunking, kept here as a private reference: `[batch, N]` float32
logits from `model.scores`, a float64 copy in `ranks_of_labels`, a per-user lookup of the seen
videos. Both print a checksum of the ranks, which must agree.

Run from a snapshot copy of the repository:

    PYTHONPATH=. python3 benchmarks/evaluation_scale.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

CATALOGUES = (100_000, 1_000_000)
NUM_USERS = {100_000: 1024, 1_000_000: 512}
BATCH_SIZE = 256
DIM = 64


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _dense_model_ranks(model, holdout, video_vocab, batch_size):
    """The dense reference: the evaluation before chunking."""
    import numpy as np
    import tensorflow as tf

    from tfrs_youtube.evaluation import ranks_of_labels

    keys = [k for k in model.feature_layers if k != "example_age"]
    features = holdout.features
    spec = {k: tf.TensorSpec([None] * features[k].ndim, tf.string) for k in keys}
    scores_fn = tf.function(model.scores, input_signature=[spec])
    labels = video_vocab.index(features["label"], unknown=-1)
    ranks = []
    for start in range(0, len(labels), batch_size):
        stop = min(start + batch_size, len(labels))
        scores = scores_fn({k: tf.constant(features[k][start:stop]) for k in keys}).numpy()
        seen = [video_vocab.index(s, unknown=-1) for s in holdout.seen[start:stop]]
        ranks.append(ranks_of_labels(scores, labels[start:stop], seen))
    return np.concatenate(ranks)


def _child(num_videos: int, method: str) -> None:
    import numpy as np
    import tensorflow as tf

    import tfrs_youtube  # noqa: F401  (Keras 2 first)
    from tfrs_youtube.config import YouTubeCandidateConfig
    from tfrs_youtube.data import ExampleSet, Vocabulary
    from tfrs_youtube.evaluation import model_ranks
    from tfrs_youtube.models import YouTubeCandidateModel

    tf.keras.utils.set_random_seed(0)
    ids = np.array([f"v{i}" for i in range(num_videos)], dtype=object)
    vocab = Vocabulary(ids, np.ones(num_videos, dtype=np.int64))
    config = YouTubeCandidateConfig(
        video_vocabulary=list(ids), video_counts=[1] * num_videos, embedding_dim=DIM,
        output_dim=DIM, depth=1, features=["watches"], num_sampled=16, seed=0,
    )
    model = YouTubeCandidateModel(config)
    rng = np.random.default_rng(0)
    num_users = NUM_USERS[num_videos]
    history = ids[rng.integers(0, num_videos, size=(num_users, 10))]
    labels = ids[rng.integers(0, num_videos, size=num_users)]
    holdout = ExampleSet({"watch_history": history, "label": labels}, seen=list(history))
    rank = model_ranks if method == "chunked" else _dense_model_ranks
    warm = ExampleSet({"watch_history": history[:8], "label": labels[:8]}, seen=list(history[:8]))
    rank(model, warm, vocab, BATCH_SIZE)  # traces the functions
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    ranks = rank(model, holdout, vocab, BATCH_SIZE)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "users_per_s": num_users / seconds,
        "peak_growth_mb": (_status("VmHWM") - before) / 2**20,
        "checksum": int((ranks * np.arange(1, len(ranks) + 1)).sum()),
        "num_users": num_users,
    }))  # fmt: skip


def main() -> int:
    print(f"model_ranks, d={DIM}, batch_size={BATCH_SIZE}, one fresh process per row")
    print("| videos | users | method | users/s | peak RSS growth (MB) | ranks checksum |")
    print("|---|---|---|---|---|---|")
    for num_videos in CATALOGUES:
        checksums = set()
        for method in ("chunked", "dense"):
            result = subprocess.run(
                [sys.executable, __file__, "--child", str(num_videos), method],
                capture_output=True, text=True,
            )  # fmt: skip
            if result.returncode != 0:
                print(f"| {num_videos:,} | - | {method} | failed: {result.stderr[-500:]!r} |")
                continue
            r = json.loads(result.stdout.strip().splitlines()[-1])
            checksums.add(r["checksum"])
            print(f"| {num_videos:,} | {r['num_users']} | {method} | {r['users_per_s']:.1f} | "
                  f"{r['peak_growth_mb']:.0f} | {r['checksum']} |")  # fmt: skip
        if len(checksums) > 1:
            print(f"ranks differ between the methods at {num_videos:,} videos")
            return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())
