"""A 10M-video catalogue under ParameterServerStrategy on localhost: ps memory and examples/s.

The integer-ID model (`YouTubeCandidateConfig(video_vocabulary=None, num_videos=10_000_000)`,
d = 64, watches only, mean pooling, tied input/output table, 4,096 log-uniform negatives) is
trained on synthetic random batches of integer IDs (50-watch histories), in two set-ups in the
same run, each in its own processes:

- `single`: one process, the default strategy (the reference);
- `parameter_server`: a chief, `--workers` workers and 2 parameter servers, each a local
  process talking gRPC on 127.0.0.1; `tfrs_youtube.distribute.make_partitioner(2)` shards the
  video table and `b_j` across the two parameter servers.

Reported: examples/s over the timed epoch (the first epoch, which traces and warms up, is not
timed), the peak RSS (VmHWM from /proc/<pid>/status) of each parameter server (and its RSS
once training is done, VmRSS), of the chief and of the single process, and how the tables were
split. With one table of 10M x 64 float32
(2.56 GB) and Adagrad (one accumulator slot per table, updated at the rows of a step only),
each parameter server should hold about half of the table and its slot. tf_keras's SGD keeps a
momentum slot even at momentum 0 and updates it densely every step: not the choice here.

Memory: at 10M the single process peaked at 14 GB and each parameter server passed 4.6 GB
(docs/distributed.md); run `--videos 3000000` on a machine with less than ~20 GB free.

Usage: python benchmarks/parameter_server.py [--videos 10000000] [--dim 64] [--steps 20]
    [--batch-size 1024] [--num-sampled 4096] [--workers 1] [--optimizer adagrad|lazy_adam|sgd]
Run it from a snapshot copy of the repository (autograph reads the source files).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HISTORY = 50


def _config(args):
    from tfrs_youtube.config import YouTubeCandidateConfig

    return YouTubeCandidateConfig(
        video_vocabulary=None, num_videos=args.videos, embedding_dim=args.dim,
        output_dim=args.dim, depth=1, features=["watches"], history_pooling="mean",
        num_sampled=args.num_sampled, dropout=0.0, input_dropout=0.0, metrics_k=[], seed=0,
    )


def _dataset_fn(args):
    import tensorflow as tf

    def dataset_fn(context=None):
        def batch(i):
            seed = tf.stack([i, tf.constant(7, tf.int64)])
            history = tf.random.stateless_uniform(
                [args.batch_size, HISTORY], seed, 0, args.videos, dtype=tf.int64)
            label = tf.random.stateless_uniform(
                [args.batch_size], seed + 1, 0, args.videos, dtype=tf.int64)
            return {"watch_history": history, "label": label}

        return tf.data.Dataset.range(1 << 30).map(batch).prefetch(2)

    return dataset_fn


class _EpochTimer:
    def __init__(self):
        import tensorflow as tf

        class Timer(tf.keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self.start)

        self.callback = Timer()


def _train(args, strategy) -> dict:
    import tensorflow as tf

    from tfrs_youtube.distribute import sharded_variable_devices
    from tfrs_youtube.models import YouTubeCandidateModel
    from tfrs_youtube.pipeline import make_optimizer

    start = time.perf_counter()
    with strategy.scope():
        model = YouTubeCandidateModel(_config(args))
        model.compile(optimizer=make_optimizer(args.optimizer, 0.05))
        model(model.placeholder_features())
    build_seconds = time.perf_counter() - start
    timer = _EpochTimer().callback
    data = tf.keras.utils.experimental.DatasetCreator(_dataset_fn(args))
    model.fit(data, epochs=2, steps_per_epoch=args.steps, verbose=0, callbacks=[timer])
    shards = sharded_variable_devices(model)
    return {
        "examples_per_second": args.steps * args.batch_size / timer.seconds[-1],
        "timed_epoch_seconds": timer.seconds[-1],
        "build_seconds": build_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "shards": {name: [d.split("/device")[0] for d in devices]
                   for name, devices in shards.items()},
    }


def _role_main(args) -> None:
    import tensorflow as tf

    import tfrs_youtube  # noqa: F401  (Keras 2 before tf.keras is first used)
    from tfrs_youtube import distribute

    if args.role == "server":
        distribute.run_server_if_not_chief("parameter_server")
        return
    if args.role == "single":
        result = _train(args, tf.distribute.get_strategy())
    else:
        result = _train(args, distribute.make_strategy("parameter_server"))
    print("RESULT " + json.dumps(result), flush=True)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _vm_hwm_mb(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of /proc/<pid>/status in MB: VmHWM (peak RSS) or VmRSS (now)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(args, role, env=None, **popen):
    command = [sys.executable, os.path.abspath(__file__), "--role", role,
               "--videos", str(args.videos), "--dim", str(args.dim), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--num-sampled", str(args.num_sampled),
               "--optimizer", args.optimizer]
    return subprocess.Popen(command, env=env, **popen)


def _result(proc, timeout) -> dict:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-sampled", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--optimizer", default="adagrad", choices=["sgd", "adagrad", "lazy_adam"])
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--role", default=None, choices=["single", "chief", "server"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is not None:
        _role_main(args)
        return

    table_mb = args.videos * args.dim * 4 / 2**20
    print(f"{args.videos:,} videos x d={args.dim}: video table {table_mb:,.0f} MB float32, "
          f"batch {args.batch_size}, {args.num_sampled} negatives, {args.optimizer}, "
          f"{args.steps} timed steps", flush=True)
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    single = _child(args, "single", **pipe)
    try:
        single_result = _result(single, args.timeout)
    finally:
        if single.poll() is None:
            single.kill()
    print(f"single      : {single_result['examples_per_second']:,.0f} examples/s, peak RSS "
          f"{single_result['peak_rss_mb']:,.0f} MB", flush=True)

    ports = _free_ports(3 + args.workers)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"],
               "ps": [f"127.0.0.1:{p}" for p in ports[1:3]],
               "worker": [f"127.0.0.1:{p}" for p in ports[3:]]}

    def env(task_type, index):
        return dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": task_type, "index": index}}))

    servers = {}
    try:
        for task_type, count in (("ps", 2), ("worker", args.workers)):
            for index in range(count):
                servers[f"{task_type}{index}"] = _child(
                    args, "server", env(task_type, index),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        chief = _child(args, "chief", env("chief", 0), **pipe)
        servers["chief"] = chief
        result = _result(chief, args.timeout)
        memory = {name: _vm_hwm_mb(proc.pid) for name, proc in servers.items()
                  if name != "chief" and proc.poll() is None}
        resting = {name: _vm_hwm_mb(proc.pid, "VmRSS") for name, proc in servers.items()
                   if name != "chief" and proc.poll() is None}
    finally:
        for proc in servers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"param server: {result['examples_per_second']:,.0f} examples/s "
          f"({args.workers} worker(s), 2 ps), chief peak RSS {result['peak_rss_mb']:,.0f} MB")
    for name, mb in sorted(memory.items()):
        print(f"  {name:8s} peak RSS (VmHWM) {mb:,.0f} MB, after training (VmRSS) "
              f"{resting[name]:,.0f} MB")
    for name, devices in result["shards"].items():
        print(f"  {name}: {len(devices)} shards on {', '.join(devices)}")
    print(json.dumps({"single": single_result, "parameter_server": result,
                      "peak_rss_mb": memory, "rss_after_training_mb": resting}))


if __name__ == "__main__":
    main()
