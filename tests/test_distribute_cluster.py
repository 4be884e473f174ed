"""`tfrs-youtube train --strategy ...` as real clusters of local processes (docs/distributed.md).

Every task is a `python -m tfrs_youtube.cli train ...` process with its own `TF_CONFIG`,
talking gRPC on 127.0.0.1 (free ports). Each process has a timeout and every child is killed
in `finally`. The data is the synthetic "tiny" preset (198 holdout users, 273 videos), with
dropout off so that a resumed run can be compared exactly.

What the tests show:
- MultiWorkerMirroredStrategy, 2 workers: the chief writes the run (the other worker writes
  into a temporary folder that is removed) and its holdout Recall@50 is within `TOLERANCE` of
  the single-process run with the same data, seed and global batch.
- ParameterServerStrategy, chief + 2 workers + 2 ps, with worker 1 killed (SIGKILL) after the
  first epoch and started again: the chief's `ClusterCoordinator` finishes training, Recall@50
  is within `TOLERANCE` of the single-process run, and the tables (the tied video embeddings
  and `b_j`) are split across both parameter servers (`metrics.json`'s `variable_shards`).
- The single-process job killed (SIGKILL) after its first backup and started again with the
  same command resumes from the backup and ends with the same holdout metrics as the
  uninterrupted run (marked slow: about two more minutes). The same under `mirrored`,
  `multi_worker` and `parameter_server`: tests/test_distribute_resume.py.

Tolerance. Recall@50 of single-process runs over seeds 0, 1, 2 (data and initialization change
with the seed): 0.3889, 0.3535, 0.3719 (`tfrs-youtube train --preset tiny --max-epochs 8
--no-validation --dropout 0 --input-dropout 0`): a spread of 0.035, and the binomial standard
error of a recall near 0.37 over 198 users is 0.034. Distributed runs differ from the single
run in the negatives drawn (seeded per replica) and, under ParameterServerStrategy, in the
asynchronous updates; `TOLERANCE = 0.1` is three standard errors.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

EPOCHS = 8
TOLERANCE = 0.1
TIMEOUT = 600  # seconds for one training process (TensorFlow starts slowly on shared cores)
# Small enough that the tiny catalogue's tables (70 KB, 1 KB) are split over 2 ps.
MIN_SHARD_BYTES = "512"


def _command(output: pathlib.Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "tfrs_youtube.cli", "train", "--data", "synthetic",
        "--preset", "tiny", "--seed", "0", "--max-epochs", str(EPOCHS), "--no-validation",
        "--dropout", "0", "--input-dropout", "0", "--output", str(output), *extra,
    ]


def _env(tf_config: dict | None = None) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               TFRS_YOUTUBE_MIN_SHARD_BYTES=MIN_SHARD_BYTES)
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


class _Processes:
    """Child processes, each logging to a file; all killed on exit."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder, self.procs = folder, {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def wait(self, name: str, timeout: float = TIMEOUT) -> None:
        code = self.procs[name].wait(timeout=timeout)
        assert code == 0, f"{name} exited with {code}:\n{self.log(name)[-4000:]}"

    def wait_for(self, name: str, condition, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.procs[name].poll() is None, (
                f"{name} ended early:\n{self.log(name)[-4000:]}")
            assert time.monotonic() < deadline, f"timed out waiting on {name}"
            time.sleep(0.2)

    def __enter__(self) -> "_Processes":
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _metrics(run: pathlib.Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _recall_at_50(run: pathlib.Path) -> float:
    return _metrics(run)["holdout"]["youtube_dnn"]["recall_at_50"]


# Task roles and argument checks, in this process (no cluster).


@pytest.mark.parametrize(
    "tf_config, chief",
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
          "task": {"type": "worker", "index": 0}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
          "task": {"type": "chief", "index": 0}}, True),
        ({"cluster": {"chief": ["c:1"], "ps": ["p:1"]}, "task": {"type": "ps", "index": 0}},
         False),
    ],
)
def test_is_chief_follows_tensorflows_convention(monkeypatch, tf_config, chief):
    from tfrs_youtube import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distribute.is_chief() is chief


def test_make_strategy_errors(monkeypatch):
    from tfrs_youtube import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"Unknown `strategy`.*Received: strategy='tpu'"):
        distribute.make_strategy("tpu")
    for name in ("multi_worker", "parameter_server"):
        with pytest.raises(ValueError, match=rf"strategy='{name}' needs the cluster"):
            distribute.make_strategy(name)
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief"}}))
    with pytest.raises(ValueError, match=r"needs at least one 'ps' task"):
        distribute.make_strategy("parameter_server")
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"chief": ["c:1"], "ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}))
    with pytest.raises(ValueError, match=r"made on the 'chief' task.*'type': 'ps'"):
        distribute.make_strategy("parameter_server")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match=r"`TF_CONFIG` is not JSON"):
        distribute.cluster_config()
    monkeypatch.setenv("TF_CONFIG", "[1]")
    with pytest.raises(ValueError, match=r"must be a JSON object. Received: TF_CONFIG='\[1\]'"):
        distribute.cluster_config()


def test_make_partitioner_shards_only_large_variables(monkeypatch):
    import tensorflow as tf

    from tfrs_youtube import distribute

    monkeypatch.delenv("TFRS_YOUTUBE_MIN_SHARD_BYTES", raising=False)
    partitioner = distribute.make_partitioner(2)  # 256 KiB shards at least
    assert partitioner(tf.TensorShape([10_000_000, 64]), tf.float32) == [2, 1]
    assert partitioner(tf.TensorShape([512, 64]), tf.float32) == [1, 1]  # 128 KiB: whole
    monkeypatch.setenv("TFRS_YOUTUBE_MIN_SHARD_BYTES", "1024")
    assert distribute.make_partitioner(2)(tf.TensorShape([512, 64]), tf.float32) == [2, 1]
    with pytest.raises(ValueError, match=r"Received: num_shards=0"):
        distribute.make_partitioner(0)
    with pytest.raises(ValueError, match=r"Received: min_shard_bytes=-1"):
        distribute.make_partitioner(2, min_shard_bytes=-1)


def test_train_rejects_bad_backup_steps():
    from tfrs_youtube import pipeline

    with pytest.raises(ValueError, match=r"`backup_steps` must be an int >= 1.*backup_steps=0"):
        pipeline.train(None, None, backup_steps=0)


# Clusters of local processes.


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("single")
    with _Processes(folder) as procs:
        procs.start("train", _command(folder / "run"), _env())
        procs.wait("train")
    assert not (folder / "run.backup").exists()  # removed when training ended
    return folder / "run"


def test_multi_worker_mirrored_two_processes_match_single_process(tmp_path, single_run,
                                                                 free_ports):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    with _Processes(tmp_path) as procs:
        for index in range(2):
            procs.start(f"worker{index}", _command(tmp_path / "run", "--strategy", "multi_worker"),
                        _env({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        for index in range(2):
            procs.wait(f"worker{index}")
        assert "writes the run" in procs.log("worker1")
    train = _metrics(tmp_path / "run")["train"]
    assert train["strategy"] == "CollectiveAllReduceStrategy"
    assert train["num_replicas_in_sync"] == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run", "worker0.log",
                                                                 "worker1.log"]
    assert abs(_recall_at_50(tmp_path / "run") - _recall_at_50(single_run)) <= TOLERANCE


def test_parameter_server_cluster_survives_a_killed_worker(tmp_path, single_run, free_ports):
    ports = free_ports(5)
    cluster = {
        "chief": [f"127.0.0.1:{ports[0]}"],
        "worker": [f"127.0.0.1:{port}" for port in ports[1:3]],
        "ps": [f"127.0.0.1:{port}" for port in ports[3:5]],
    }
    command = _command(tmp_path / "run", "--strategy", "parameter_server")

    def env(task_type: str, index: int) -> dict[str, str]:
        return _env({"cluster": cluster, "task": {"type": task_type, "index": index}})

    with _Processes(tmp_path) as procs:
        for task_type, count in (("ps", 2), ("worker", 2)):
            for index in range(count):
                procs.start(f"{task_type}{index}", command, env(task_type, index))
        procs.start("chief", command, env("chief", 0))
        procs.wait_for("chief", lambda: f"epoch 1/{EPOCHS}:" in procs.log("chief"))
        procs.procs["worker1"].send_signal(signal.SIGKILL)
        procs.procs["worker1"].wait(timeout=30)
        time.sleep(2)
        procs.start("worker1", command, env("worker", 1))  # the same task, started again
        procs.wait("chief")
        for name in ("ps0", "ps1", "worker0", "worker1"):  # they serve until stopped
            assert procs.procs[name].poll() is None, procs.log(name)[-2000:]
    train = _metrics(tmp_path / "run")["train"]
    assert train["strategy"] == "ParameterServerStrategyV2"
    assert train["epochs"] == EPOCHS
    shards = train["variable_shards"]
    # The video table (tied: the history's input rows and v_j, built in the candidates' name
    # scope) and b_j.
    tables = ["candidate_embeddings/embeddings", "candidate_embeddings/bias"]
    assert set(tables) <= set(shards), shards
    for name in tables:  # shards are placed round-robin: in either order
        assert sorted(device.split("/device")[0] for device in shards[name]) == [
            "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"], shards
    assert abs(_recall_at_50(tmp_path / "run") - _recall_at_50(single_run)) <= TOLERANCE


@pytest.mark.slow
def test_killed_single_process_job_resumes_to_the_same_metrics(tmp_path, single_run):
    backup = tmp_path / "backup"
    command = _command(tmp_path / "run", "--backup-dir", str(backup))
    with _Processes(tmp_path) as procs:
        procs.start("first", command, _env())
        procs.wait_for("first", lambda: (backup / "chief" / "checkpoint").exists())
        procs.procs["first"].send_signal(signal.SIGKILL)
        procs.procs["first"].wait(timeout=30)
        assert not (tmp_path / "run").exists()
        procs.start("again", command, _env())
        procs.wait("again")
    resumed, uninterrupted = _metrics(tmp_path / "run"), _metrics(single_run)
    assert resumed["train"]["resumed_at_step"] > 0
    assert resumed["train"]["epochs"] < EPOCHS  # it did not start over
    for key, value in uninterrupted["holdout"]["youtube_dnn"].items():
        assert resumed["holdout"]["youtube_dnn"][key] == pytest.approx(value, abs=1e-6), key
    assert not backup.exists()
