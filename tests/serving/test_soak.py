"""Soak (issue 16, "Tests and benchmarks"): 8 clients for 60 s while versions come and go.

One real server subprocess (`--enable-batching`) on 127.0.0.1; this process exports a new
brute-force version every few seconds and deletes all but the 2 newest, as a training job
publishing to a TF Serving base path would. Requests name no version, so none may fail:
TF Serving's policy (followed here) keeps answering on the loaded version until the newer one
is loaded, and a deleted version is only ever the older of the two kept. The server's RSS
after a warm-up period is compared with its RSS at the end.
"""

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfrs_youtube.export import export_saved_model
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

MODEL = "yt"
VOCAB = [f"v{i}" for i in range(500)]
CLIENTS = 8
SECONDS = 60.0
WARM_UP = 20.0  # seconds of load (and several version swaps) before the first RSS reading
EXPORT_EVERY = 3.0
KEEP = 2


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _versions(base):
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit())


def test_eight_clients_for_60_s_while_versions_are_published_and_deleted(tmp_path):
    model = YouTubeCandidateModel(YouTubeCandidateConfig(
        video_vocabulary=VOCAB, embedding_dim=8, output_dim=8, depth=1, features=["watches"],
        num_sampled=None, seed=7))
    base = tmp_path / MODEL
    export_saved_model(model, base, index="brute_force", k=10)
    log = tmp_path / "server.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tfrs_youtube.serving.server", str(base), "--model-name",
             MODEL, "--port", "0", "--poll-seconds", "0.5", "--max-workers", "16",
             "--enable-batching", "--batch-timeout-micros", "1000"],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    stop = threading.Event()
    lock = threading.Lock()
    answered, failures, served = [0], [], set()
    exported, deleted = [1], []
    threads = []
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("Serving model"), (line, log.read_text()[-2000:])
        port = int(line.split(":")[-1].split(",")[0])
        rng = np.random.default_rng(0)
        requests = []
        for _ in range(64):
            history = list(rng.choice(VOCAB, size=int(rng.integers(1, 30))))
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL
            request.inputs["watch_history"].CopyFrom(
                tf.make_tensor_proto(np.array([history], dtype=object)))
            requests.append(request)

        def client(index):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(
                grpc.insecure_channel(f"127.0.0.1:{port}"))
            count, seen = 0, set()
            while not stop.is_set():
                try:
                    response = stub.Predict(requests[(index * 7 + count) % len(requests)],
                                            timeout=30)
                    assert len(response.outputs["video_ids"].string_val) == 10
                    seen.add(response.model_spec.version.value)
                except (grpc.RpcError, AssertionError) as error:
                    with lock:
                        failures.append(repr(error)[:300])
                count += 1
            with lock:
                answered[0] += count
                served.update(seen)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        rss_warm = None
        next_export = start + EXPORT_EVERY
        while time.monotonic() - start < SECONDS:
            assert process.poll() is None, log.read_text()[-2000:]
            now = time.monotonic()
            if rss_warm is None and now - start >= WARM_UP:
                rss_warm = _rss_kib(process.pid)
            if now >= next_export:
                exported.append(int(export_saved_model(
                    model, base, index="brute_force", k=10, warmup=False).name))
                for version in _versions(base)[:-KEEP]:
                    shutil.rmtree(base / str(version))
                    deleted.append(version)
                next_export = time.monotonic() + EXPORT_EVERY
            time.sleep(0.1)
        rss_end = _rss_kib(process.pid)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    assert exit_code == 0
    assert not failures, (len(failures), failures[:5])
    assert answered[0] > 0
    # Versions were swapped under load: several served, several deleted.
    assert len(exported) >= 5 and len(deleted) >= 3, (exported, deleted)
    assert len(served) >= 3, (sorted(served), exported)
    assert rss_warm is not None
    growth = (rss_end - rss_warm) / rss_warm
    print(f"{answered[0]} requests, 0 failed; versions exported {exported}, served "
          f"{sorted(served)}; RSS {rss_warm / 1024:.0f} MiB after {WARM_UP:.0f} s, "
          f"{rss_end / 1024:.0f} MiB at {SECONDS:.0f} s ({growth:+.1%})")
    assert growth < 0.10, (rss_warm, rss_end)
