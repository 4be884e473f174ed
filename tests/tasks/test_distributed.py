"""`SampledSoftmaxRetrieval` and the model under `tf.distribute` (DESIGN.md section 7).

Each scenario runs in a fresh Python process: two logical CPU devices must be configured
before TensorFlow initializes, and the ParameterServerStrategy case starts real gRPC servers
(two parameter servers and a worker, in process, bound to 127.0.0.1 on free ports). The child
prints one JSON line of results; the assertions are made here.

What the tests show:
- MirroredStrategy over 2 replicas: the replicas draw different negatives, and the same
  replica draws different ones on the next step.
- One optimizer step (SGD, learning rate 1, so the change of a variable is minus its summed
  gradient) on one global batch under 2 replicas equals the single-replica step on the same
  batch: full softmax exactly (to float32 tolerance); sampled softmax against a single-replica
  reference that uses the negatives of each replica's seed on that replica's half.
  With the loss divided by the local batch (the code before this fix) the 2-replica change is
  twice the single-replica one, and these tests fail.
- `YouTubeCandidateModel.fit` for one step (with an L2 regularizer, which must also be divided
  by the replicas) under 2 replicas leaves the same weights as on one device.
- ParameterServerStrategy with a `MinSizePartitioner`: the output table, the bias and the
  input table are `ShardedVariable`s split across both parameter servers, and a scheduled
  training step through `lookup` updates only rows of the batch, on the shards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TIMEOUT = 240  # seconds per child process; TensorFlow starts slowly on 2 shared cores


def _run(script: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err[-4000:]}"
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no result line in the child's output:\n{out[-2000:]}\n{err[-2000:]}"
    return json.loads(lines[-1])


_PRELUDE = """
import json
import numpy as np
import tfrs_youtube  # Keras 2 before TensorFlow
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
from tfrs_youtube.layers import CandidateEmbeddings
from tfrs_youtube.tasks import SampledSoftmaxRetrieval, samplers

N, D, IN, B = 40, 6, 5, 8
rng = np.random.default_rng(0)
TABLE = rng.normal(size=(N, D)).astype(np.float32)
BIAS = rng.normal(size=N).astype(np.float32) * 0.1
KERNEL = rng.normal(size=(IN, D)).astype(np.float32)
X = rng.normal(size=(B, IN)).astype(np.float32)
LABELS = rng.integers(0, N, size=B).astype(np.int64)
STEP = 3


class Recording(samplers.CandidateSampler):
    # A user-written sampler: delegates, and keeps the draw of the trace being built.
    def __init__(self, inner):
        super().__init__(inner.num_candidates)
        self.inner, self.last = inner, None

    def sample(self, num_sampled, labels, seed=None):
        self.last = self.inner.sample(num_sampled, labels, seed=seed)
        return self.last

    def log_expected_count(self, ids, num_sampled, labels):
        return self.inner.log_expected_count(ids, num_sampled, labels)


class Fixed(samplers.CandidateSampler):
    # Returns given negatives; log Q from the log-uniform law.
    def __init__(self, ids):
        super().__init__(N)
        self.ids, self.law = tf.constant(ids, tf.int64), samplers.LogUniformSampler(N)

    def sample(self, num_sampled, labels, seed=None):
        return self.ids, self.law.log_expected_count(self.ids, num_sampled, labels)

    def log_expected_count(self, ids, num_sampled, labels):
        return self.law.log_expected_count(ids, num_sampled, labels)


def make_vars():
    candidates = CandidateEmbeddings(
        N, D, embeddings_initializer=tf.constant_initializer(TABLE),
        bias_initializer=tf.constant_initializer(BIAS),
    )
    candidates.build(None)
    kernel = tf.Variable(KERNEL, name="kernel")
    return candidates, kernel


def sgd_delta(strategy, task_fn, x, labels):
    # One SGD(1.0) step on (x, labels) split over the strategy's replicas: -(summed grads).
    with strategy.scope():
        candidates, kernel = make_vars()
        task = task_fn()
        optimizer = tf.keras.optimizers.SGD(1.0)
        variables = [candidates.embeddings, candidates.bias, kernel]
        optimizer.build(variables)
    before = [v.numpy() for v in variables]
    data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(len(labels))
    batch = next(iter(strategy.experimental_distribute_dataset(data)))

    @tf.function
    def step(batch):
        def replica(x, labels):
            with tf.GradientTape() as tape:
                # The full softmax draws nothing: called as before the step argument existed.
                extra = {"step": STEP} if task.num_sampled is not None else {}
                loss = task(tf.matmul(x, kernel), labels, candidates, compute_metrics=False,
                            **extra)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
            return loss
        losses = strategy.run(replica, args=batch)
        return strategy.reduce("SUM", losses, axis=None)

    loss = float(step(batch))
    return loss, [b - v.numpy() for b, v in zip(before, variables)]
"""


@pytest.fixture(scope="module")
def mirrored_results() -> dict:
    return _run(_PRELUDE + """
results = {}
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
single = tf.distribute.get_strategy()

# (a) Two replicas, two steps: which negatives each replica drew.
with mirrored.scope():
    candidates, kernel = make_vars()
    recording = Recording(samplers.LogUniformSampler(N))
    task = SampledSoftmaxRetrieval(N, num_sampled=16, sampler=recording, seed=1)

@tf.function
def draws(x, labels, step):
    def replica(x, labels):
        task(tf.matmul(x, kernel), labels, candidates, step=step, compute_metrics=False)
        return recording.last[0]
    return mirrored.run(replica, args=(x, labels))

data = tf.data.Dataset.from_tensor_slices((X, LABELS)).batch(B)
batch = next(iter(mirrored.experimental_distribute_dataset(data)))
ids = {}
for step in (0, 1):
    per_replica = draws(*batch, tf.constant(step, tf.int64))
    ids[step] = [v.numpy().tolist() for v in mirrored.experimental_local_results(per_replica)]
results["draws"] = ids

# (b') sampled softmax: 2 replicas vs a single-replica reference with each replica's draws.
sampled = lambda: SampledSoftmaxRetrieval(N, num_sampled=12, seed=5)
loss_2, delta_2 = sgd_delta(mirrored, sampled, X, LABELS)
probe = sampled()
halves = [(X[: B // 2], LABELS[: B // 2]), (X[B // 2:], LABELS[B // 2:])]
negatives = [
    probe._sampler.sample(12, tf.constant(labels), seed=probe.sampler_seed(STEP, r))[0].numpy()
    for r, (_, labels) in enumerate(halves)
]
candidates, kernel = make_vars()
variables = [candidates.embeddings, candidates.bias, kernel]
with tf.GradientTape() as tape:
    total = 0.0
    for (x, labels), neg in zip(halves, negatives):
        task = SampledSoftmaxRetrieval(N, num_sampled=12, sampler=Fixed(neg))
        total += task(tf.matmul(x, kernel), labels, candidates, compute_metrics=False) * (
            len(labels) / B)
grads = tape.gradient(total, variables)
dense = [tf.convert_to_tensor(g).numpy() for g in grads]
results["sampled"] = {"loss_2": loss_2, "loss_ref": float(total),
                      "delta_2": [d.tolist() for d in delta_2],
                      "grad_ref": [g.tolist() for g in dense],
                      "negatives": [n.tolist() for n in negatives]}
print(json.dumps(results))
""")


def test_full_softmax_step_under_two_replicas_equals_one_replica():
    # Runs on the code before the fix too (no new arguments), where it fails: twice the step.
    full = _run(_PRELUDE + """
full = lambda: SampledSoftmaxRetrieval(N, num_sampled=None)
loss_1, delta_1 = sgd_delta(tf.distribute.get_strategy(), full, X, LABELS)
loss_2, delta_2 = sgd_delta(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), full, X, LABELS)
print(json.dumps({"loss_1": loss_1, "loss_2": loss_2, "delta_1": [d.tolist() for d in delta_1],
                  "delta_2": [d.tolist() for d in delta_2]}))
""")
    for one, two in zip(full["delta_1"], full["delta_2"]):
        # Before the fix every replica divided by its own batch: the change was twice as big.
        np.testing.assert_allclose(np.array(two), np.array(one), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(full["loss_2"], full["loss_1"], rtol=1e-5)
    assert np.abs(np.array(full["delta_1"][0])).max() > 1e-3  # the step did move the table


def test_two_replicas_and_two_steps_draw_different_negatives(mirrored_results):
    draws = mirrored_results["draws"]
    for step in ("0", "1"):
        replica_0, replica_1 = draws[step]
        assert len(replica_0) == len(replica_1) == 16
        assert replica_0 != replica_1, f"both replicas drew {replica_0} at step {step}"
    assert draws["0"][0] != draws["1"][0], "replica 0 drew the same negatives at steps 0 and 1"


def test_sampled_softmax_step_under_two_replicas_equals_reference(mirrored_results):
    sampled = mirrored_results["sampled"]
    assert sampled["negatives"][0] != sampled["negatives"][1]
    np.testing.assert_allclose(sampled["loss_2"], sampled["loss_ref"], rtol=1e-5)
    for delta, grad in zip(sampled["delta_2"], sampled["grad_ref"]):
        # SGD(1.0): before - after is the summed gradient.
        np.testing.assert_allclose(np.array(delta), np.array(grad), rtol=1e-4, atol=1e-6)


def test_model_fit_step_under_two_replicas_equals_one_device():
    results = _run(_PRELUDE + """
from tfrs_youtube.models import YouTubeCandidateModel, YouTubeCandidateConfig

videos = [f"v{i}" for i in range(30)]
rng = np.random.default_rng(1)
batch = {
    "watch_history": rng.choice(videos, size=(8, 4)).astype(object),
    "label": rng.choice(videos, size=8).astype(object),
}
config = YouTubeCandidateConfig(
    video_vocabulary=videos, embedding_dim=8, output_dim=8, depth=1, features=["watches"],
    num_sampled=10, dropout=0.0, input_dropout=0.0, embedding_l2=0.01, seed=3,
    history_pooling="mean", metrics_k=[5],
)

def one_step(strategy):
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = YouTubeCandidateModel(config)
        model(model.placeholder_features())
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    before = [w.copy() for w in model.get_weights()]
    data = tf.data.Dataset.from_tensor_slices(batch).batch(8)
    history = model.fit(data, epochs=1, verbose=0)
    return history.history["loss"][0], [b - w for b, w in zip(before, model.get_weights())]

loss_1, delta_1 = one_step(tf.distribute.get_strategy())
loss_2, delta_2 = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"loss_1": float(loss_1), "loss_2": float(loss_2),
                  "delta_1": [d.tolist() for d in delta_1],
                  "delta_2": [d.tolist() for d in delta_2]}))
""")
    # The replicas' negatives differ from the single device's (seeded per replica), so the
    # sampled loss differs a little; the reported loss must still be the global mean (about
    # the same), not half or twice it.
    assert abs(results["loss_2"] - results["loss_1"]) < 0.25 * results["loss_1"]
    moved = [np.abs(np.array(d)).max() for d in results["delta_1"]]
    assert max(moved) > 1e-3
    for one, two in zip(results["delta_1"], results["delta_2"]):
        one, two = np.array(one), np.array(two)
        # Sampled negatives differ per replica, so compare the size of the step: twice as big
        # (the bug) is far outside this band.
        scale = np.abs(one).sum()
        if scale > 1e-6:
            assert 0.6 < np.abs(two).sum() / scale < 1.6


def test_parameter_server_tables_are_sharded_and_train_through_lookup(free_ports):
    ports = free_ports(4)
    results = _run(f"""
import json
import numpy as np
import tfrs_youtube
import tensorflow as tf
from tfrs_youtube.layers import CandidateEmbeddings, HistoryEmbeddingPooler
from tfrs_youtube.tasks import SampledSoftmaxRetrieval

ports = {ports}
cluster = {{"chief": [f"127.0.0.1:{{ports[0]}}"], "worker": [f"127.0.0.1:{{ports[1]}}"],
           "ps": [f"127.0.0.1:{{ports[2]}}", f"127.0.0.1:{{ports[3]}}"]}}
spec = tf.train.ClusterSpec(cluster)
servers = [tf.distribute.Server(spec, job_name=job, task_index=i, protocol="grpc")
           for job, i in (("worker", 0), ("ps", 0), ("ps", 1))]
resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
    spec, task_type="chief", task_id=0, rpc_layer="grpc")
partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
    min_shard_bytes=64, max_shards=2)
strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
N, D = 50, 4
with strategy.scope():
    pooler = HistoryEmbeddingPooler(output_dim=D, input_dim=N)
    pooler.build((None, None))
    candidates = CandidateEmbeddings(N, D)
    candidates.build(None)
    task = SampledSoftmaxRetrieval(N, num_sampled=8, seed=1)
    optimizer = tf.keras.optimizers.SGD(0.5)
    variables = [candidates.embeddings, candidates.bias, pooler.embedding.embeddings]
kinds = [type(v).__name__ for v in variables]
devices = [[s.device for s in v.variables] for v in variables]
before = [tf.convert_to_tensor(v).numpy() for v in variables]
chunk = candidates.lookup(tf.range(10, 30))

@tf.function
def step(history, labels):
    def replica(history, labels):
        with tf.GradientTape() as tape:
            loss = task(pooler(history), labels, candidates, step=optimizer.iterations,
                        compute_metrics=False)
        train = pooler.trainable_variables + candidates.trainable_variables
        grads = tape.gradient(loss, train)
        optimizer.apply_gradients(zip(grads, train))
        return loss
    return strategy.run(replica, args=(history, labels))

history = tf.constant([[1, 2, 3], [4, 5, -1]], tf.int64)
labels = tf.constant([7, 45], tf.int64)
loss = coordinator.schedule(step, args=(history, labels))
coordinator.join()
after = [tf.convert_to_tensor(v).numpy() for v in variables]
changed = [np.nonzero(np.any(np.reshape(a != b, (len(a), -1)), axis=1))[0].tolist()
           for a, b in zip(after, before)]
print(json.dumps({{"kinds": kinds, "devices": devices, "loss": float(loss.fetch()),
                  "changed": changed, "chunk": list(chunk[0].shape),
                  "chunk_ok": bool(np.allclose(chunk[0].numpy(), before[0][10:30]))}}))
""")
    assert results["kinds"] == ["ShardedVariable"] * 3
    for devices in results["devices"]:
        assert len(devices) == 2
        assert "/job:ps/replica:0/task:0" in devices[0]
        assert "/job:ps/replica:0/task:1" in devices[1]
    assert np.isfinite(results["loss"]) and results["loss"] > 0
    table, bias, inputs = results["changed"]
    assert {7, 45} <= set(table) and {7, 45} <= set(bias)  # the labels' rows, on both shards
    assert len(table) <= 2 + 8  # only labels and negatives: a sparse update
    assert set(inputs) == {1, 2, 3, 4, 5}  # the watched rows of the input table
    assert results["chunk"] == [20, 4] and results["chunk_ok"]


def test_cross_replica_negatives_gather_the_labels_of_every_replica():
    # In-batch negatives under 2 replicas: gathered, each replica's negatives are the labels of
    # the whole global batch, and one SGD step equals the single-device step on that batch;
    # not gathered, each replica sees only its half (and the step differs).
    out = _run(_PRELUDE + """
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
in_batch = lambda: samplers.InBatchSampler(N, candidate_counts=np.ones(N))
results = {"labels": LABELS.tolist()}
data = tf.data.Dataset.from_tensor_slices((X, LABELS)).batch(B)
for gather in (True, False):
    with mirrored.scope():
        candidates, kernel = make_vars()
        recording = Recording(in_batch())
        task = SampledSoftmaxRetrieval(N, num_sampled=B, sampler=recording,
                                       cross_replica_negatives=gather)

    @tf.function
    def draws(x, labels):
        def replica(x, labels):
            task(tf.matmul(x, kernel), labels, candidates, step=tf.constant(0, tf.int64),
                 compute_metrics=False)
            return recording.last[0]
        return mirrored.run(replica, args=(x, labels))

    per_replica = draws(*next(iter(mirrored.experimental_distribute_dataset(data))))
    results[f"draws_{gather}"] = [
        v.numpy().tolist() for v in mirrored.experimental_local_results(per_replica)]
    task_fn = lambda: SampledSoftmaxRetrieval(N, num_sampled=B, sampler=in_batch(),
                                              cross_replica_negatives=gather)
    loss, delta = sgd_delta(mirrored, task_fn, X, LABELS)
    results[f"loss_{gather}"], results[f"delta_{gather}"] = loss, [d.tolist() for d in delta]
single = lambda: SampledSoftmaxRetrieval(N, num_sampled=B, sampler=in_batch())
loss_1, delta_1 = sgd_delta(tf.distribute.get_strategy(), single, X, LABELS)
results["loss_1"], results["delta_1"] = loss_1, [d.tolist() for d in delta_1]
print(json.dumps(results))
""")
    labels = out["labels"]
    half = len(labels) // 2
    assert out["draws_True"] == [labels, labels]
    assert out["draws_False"] == [labels[:half], labels[half:]]
    np.testing.assert_allclose(out["loss_True"], out["loss_1"], rtol=1e-5)
    for two, one in zip(out["delta_True"], out["delta_1"]):
        np.testing.assert_allclose(np.array(two), np.array(one), rtol=1e-4, atol=1e-6)
    assert not np.isclose(out["loss_False"], out["loss_1"], rtol=1e-3)  # the check can fail
