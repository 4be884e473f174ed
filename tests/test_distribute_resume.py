"""A job killed mid-epoch and started again with the same command resumes (docs/distributed.md).

Under every strategy of `tfrs-youtube train --strategy ...`: the job is started, the test waits
(bounded) until `--backup-dir` holds a `BackupAndRestore` checkpoint past step 0, kills every
process of the job with SIGKILL, starts them all again with the same commands and `TF_CONFIG`s,
and compares the run with an uninterrupted one of the same seed. Processes are real
(`python -m tfrs_youtube.cli train`, gRPC on 127.0.0.1, free ports), each wait is bounded and
every child is killed in `finally` (`_Processes`, from tests/test_distribute_cluster.py). Data:
the synthetic "tiny" preset (5,861 training examples: 23 steps of 256 an epoch; 198 holdout
users), dropout off.

What the tests show:
- `mirrored` (one process, 2 logical CPU devices), `multi_worker` (2 worker processes, both
  killed) with a backup every 5 steps: the resumed run starts at the backed-up step (5 or
  later, inside the first epoch: `metrics.json`'s `resumed_at_step` and the "resuming from
  the backup" log line) and ends with the *same* holdout metrics (to 1e-6) and the same loss
  in every epoch it trains in full as the uninterrupted run of the same strategy. Exact,
  because nothing random is left that a restart changes: initial weights come from the seed,
  each epoch is shuffled with its own fixed seed and the resumed input skips the steps done,
  negatives are seeded by (seed, optimizer step, replica), the optimizer's moments and step
  are in the backup, dropout is off, and the all-reduce of 2 replicas adds two numbers
  (commutative, so the same in every run). The mirrored test runs in CI (3 epochs, 52 s here
  on 2 shared cores); the others are `slow`.
- `parameter_server` (chief + 2 workers + 2 ps, all killed after the chief's first epoch
  backup): the resumed chief starts at a later epoch (Keras backs up at epoch ends only under
  this strategy) and trains only the epochs left, and its Recall@50 is within `PS_TOLERANCE`
  of an uninterrupted cluster run. Not exact: the workers apply their steps asynchronously, in
  an order that changes from run to run, and the per-worker input streams start again on a
  restart (`pipeline.train`), so even two uninterrupted runs differ; see `PS_TOLERANCE`.
- LazyAdam (`--optimizer lazy_adam`) trains under `parameter_server` on sharded tables: the
  loss falls from the first epoch to the last.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import time

import pytest
from test_distribute_cluster import _env, _metrics, _Processes

BACKUP_STEPS = 5  # the tiny preset's epoch is 23 steps: every backup is mid-epoch
# Four uninterrupted parameter-server runs of the same command (seed 0, 8 epochs) gave
# Recall@50 0.3283, 0.3535, 0.3333 and 0.3333 (a spread of 0.025); three resumed runs 0.3283,
# 0.3485 and 0.3434, each within 0.015 of the uninterrupted run beside it. Single-process
# runs over seeds 0, 1, 2 spread by 0.035, and the binomial standard error of a recall near
# 0.35 over 198 users is 0.034. 0.1 is three standard errors, the tolerance of
# tests/test_distribute_cluster.py.
PS_TOLERANCE = 0.1
REPOSITORY = pathlib.Path(__file__).resolve().parents[1]

# `tfrs-youtube` itself, after splitting this process's CPU into 2 logical devices, which
# must happen before TensorFlow initializes: `mirrored` then has 2 replicas on one machine.
_TWO_CPU_CLI = """
import sys
import tfrs_youtube  # Keras 2 before TensorFlow
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfrs_youtube.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _command(output: pathlib.Path, epochs: int, *extra: str, two_cpus: bool = False
             ) -> list[str]:
    program = ["-c", _TWO_CPU_CLI] if two_cpus else ["-m", "tfrs_youtube.cli"]
    return [
        sys.executable, *program, "train", "--data", "synthetic", "--preset", "tiny",
        "--seed", "0", "--max-epochs", str(epochs), "--no-validation", "--dropout", "0",
        "--input-dropout", "0", "--output", str(output), *extra,
    ]


def _env_here(tf_config: dict | None = None) -> dict[str, str]:
    # This checkout, not an installed copy, whatever directory pytest runs from.
    env = _env(tf_config)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _backed_up_step(backup: pathlib.Path) -> int:
    """Optimizer steps in the chief's newest backup; 0 without one (or while it is written)."""
    import tensorflow as tf

    try:
        latest = tf.train.latest_checkpoint(str(backup / "chief"))
        if latest is None:
            return 0
        reader = tf.train.load_checkpoint(latest)
        return int(reader.get_tensor("model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError):
        return 0


def _kill_after_first_backup(procs: _Processes, watched: str, backup: pathlib.Path) -> int:
    """Waits (bounded) for a backup past step 0, then SIGKILLs every process; its step."""
    steps = []
    procs.wait_for(watched, lambda: steps.append(_backed_up_step(backup)) or steps[-1] > 0)
    for proc in procs.procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    for proc in procs.procs.values():
        proc.wait(timeout=30)
    return steps[-1]


def _steps_per_epoch(train: dict) -> int:
    return -(-train["train_examples"] // train["batch_size"])


def _assert_resumed_to_the_same_run(resumed_run: pathlib.Path, reference: pathlib.Path,
                                    killed_at: int, epochs: int) -> None:
    resumed, uninterrupted = _metrics(resumed_run), _metrics(reference)
    steps = _steps_per_epoch(resumed["train"])
    step = resumed["train"]["resumed_at_step"]
    assert killed_at <= step < epochs * steps  # the backup it was killed after, or a later one
    assert step % steps != 0  # in the middle of an epoch
    first = step // steps
    assert resumed["train"]["epochs"] == epochs - first
    for epoch in range(first + 1, epochs):  # the epochs it trained in full
        assert resumed["train"]["loss"][epoch - first] == pytest.approx(
            uninterrupted["train"]["loss"][epoch], rel=1e-6), epoch
    for key, value in uninterrupted["holdout"]["youtube_dnn"].items():
        assert resumed["holdout"]["youtube_dnn"][key] == pytest.approx(value, abs=1e-6), key


def test_killed_mirrored_job_resumes_mid_epoch_to_the_same_metrics(tmp_path):
    epochs = 3
    backup = tmp_path / "backup"
    resumed = _command(tmp_path / "run", epochs, "--strategy", "mirrored", "--backup-dir",
                       str(backup), "--backup-steps", str(BACKUP_STEPS), two_cpus=True)
    with _Processes(tmp_path) as procs:
        procs.start("first", resumed, _env_here())
        killed_at = _kill_after_first_backup(procs, "first", backup)
        assert not (tmp_path / "run").exists()
        # The uninterrupted run starts after the kill (which stops every live child) and
        # runs beside the resumed one.
        procs.start("reference", _command(tmp_path / "reference", epochs, "--strategy",
                                          "mirrored", two_cpus=True), _env_here())
        procs.start("again", resumed, _env_here())
        procs.wait("reference")
        procs.wait("again")
        assert "resuming from the backup" in procs.log("again")
    assert _metrics(tmp_path / "reference")["train"]["num_replicas_in_sync"] == 2
    _assert_resumed_to_the_same_run(tmp_path / "run", tmp_path / "reference", killed_at, epochs)
    assert not backup.exists()


@pytest.mark.slow
def test_killed_multi_worker_job_resumes_mid_epoch_to_the_same_metrics(tmp_path, free_ports):
    epochs = 3
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    backup = tmp_path / "backup"

    def start_workers(procs: _Processes, label: str, output: pathlib.Path, *extra: str) -> None:
        for index in range(2):
            procs.start(f"{label}{index}",
                        _command(output, epochs, "--strategy", "multi_worker", *extra),
                        _env_here({"cluster": cluster, "task": {"type": "worker",
                                                                "index": index}}))

    resume_flags = ("--backup-dir", str(backup), "--backup-steps", str(BACKUP_STEPS))
    with _Processes(tmp_path) as procs:
        start_workers(procs, "reference", tmp_path / "reference")
        for index in range(2):
            procs.wait(f"reference{index}")
        start_workers(procs, "first", tmp_path / "run", *resume_flags)
        killed_at = _kill_after_first_backup(procs, "first0", backup)
        assert not (tmp_path / "run").exists()
        start_workers(procs, "again", tmp_path / "run", *resume_flags)  # the same commands
        for index in range(2):
            procs.wait(f"again{index}")
            assert "resuming from the backup" in procs.log(f"again{index}")
    assert _metrics(tmp_path / "run")["train"]["num_replicas_in_sync"] == 2
    _assert_resumed_to_the_same_run(tmp_path / "run", tmp_path / "reference", killed_at, epochs)
    assert not backup.exists()


_DISAGREE = """
import tfrs_youtube  # Keras 2 before TensorFlow
from tfrs_youtube import distribute
strategy = distribute.make_strategy("multi_worker")
distribute.require_same_on_every_worker(strategy, 7, "steps done")  # they agree: no error
try:
    distribute.require_same_on_every_worker(strategy, distribute.task_type_and_id()[1],
                                            "steps done")
except ValueError as error:
    print(f"ValueError: {error}")
"""


def test_workers_resuming_from_different_backups_fail_at_once(tmp_path, free_ports):
    # What `pipeline.train` checks before `fit` when each worker reads its own backup folder.
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    with _Processes(tmp_path) as procs:
        for index in range(2):
            procs.start(f"worker{index}", [sys.executable, "-c", _DISAGREE], _env_here(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        for index in range(2):
            procs.wait(f"worker{index}")
            assert (f"ValueError: The workers disagree on the steps done: they have [0, 1]; "
                    f"this task (worker {index}) has {index}.") in procs.log(f"worker{index}")


def _parameter_server_run(procs: _Processes, label: str, command: list[str], ports: list[int],
                          kill_after_backup: pathlib.Path | None = None) -> int:
    """Starts chief + 2 workers + 2 ps running `command`; waits for the chief (or, with
    `kill_after_backup`, kills them all after its first backup and returns its step)."""
    cluster = {
        "chief": [f"127.0.0.1:{ports[0]}"],
        "worker": [f"127.0.0.1:{port}" for port in ports[1:3]],
        "ps": [f"127.0.0.1:{port}" for port in ports[3:5]],
    }
    for task_type, count in (("ps", 2), ("worker", 2), ("chief", 1)):
        for index in range(count):
            procs.start(f"{label}-{task_type}{index}", command,
                        _env_here({"cluster": cluster, "task": {"type": task_type,
                                                                "index": index}}))
    if kill_after_backup is not None:
        return _kill_after_first_backup(procs, f"{label}-chief0", kill_after_backup)
    procs.wait(f"{label}-chief0")
    for name, proc in procs.procs.items():  # the workers and ps serve until they are stopped
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    return 0


@pytest.mark.slow
def test_killed_parameter_server_cluster_resumes_from_its_epoch_backup(tmp_path, free_ports):
    epochs = 8
    ports = free_ports(5)
    backup = tmp_path / "backup"
    resumed = _command(tmp_path / "run", epochs, "--strategy", "parameter_server",
                       "--backup-dir", str(backup))
    with _Processes(tmp_path) as procs:
        _parameter_server_run(procs, "reference", _command(
            tmp_path / "reference", epochs, "--strategy", "parameter_server"), ports)
        killed_at = _parameter_server_run(procs, "first", resumed, ports, backup)
        assert not (tmp_path / "run").exists()
        time.sleep(2)  # the killed servers' ports are free again
        _parameter_server_run(procs, "again", resumed, ports)  # the whole cluster, again
        assert "resuming from the backup" in procs.log("again-chief0")
    train = _metrics(tmp_path / "run")["train"]
    steps, step = _steps_per_epoch(train), train["resumed_at_step"]
    assert step >= killed_at > 0
    assert step % steps == 0  # an epoch end: the only backups under this strategy
    assert train["epochs"] == epochs - step // steps < epochs
    reference = _metrics(tmp_path / "reference")["holdout"]["youtube_dnn"]["recall_at_50"]
    recall = _metrics(tmp_path / "run")["holdout"]["youtube_dnn"]["recall_at_50"]
    assert abs(recall - reference) <= PS_TOLERANCE, (recall, reference)
    assert not backup.exists()


@pytest.mark.slow
def test_lazy_adam_trains_under_parameter_server_on_sharded_tables(tmp_path, free_ports):
    with _Processes(tmp_path) as procs:
        _parameter_server_run(procs, "lazy", _command(
            tmp_path / "run", 4, "--strategy", "parameter_server", "--optimizer", "lazy_adam"),
            free_ports(5))
    train = _metrics(tmp_path / "run")["train"]
    assert train["optimizer"] == "lazy_adam"
    assert len(train["variable_shards"]["candidate_embeddings/embeddings"]) == 2
    loss = train["loss"]
    assert loss[-1] < loss[0] - 0.3, loss  # one run here: 5.18, 4.79, 4.66, 4.47
