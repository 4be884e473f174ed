"""`tfrs-youtube export`, `serve` and `query` together, over real gRPC on localhost."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from tfrs_youtube import cli


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "tiny"
    code = cli.main([
        "train", "--data", "synthetic", "--preset", "tiny", "--epochs", "1", "--depth", "1",
        "--embedding-dim", "16", "--output-dim", "16", "--output", str(run_dir), "--k", "10",
    ])
    assert code == 0
    return run_dir


def test_export_serve_query(tiny_run, tmp_path, capsys):
    base = tmp_path / "tiny"
    assert cli.main(["export", str(tiny_run), "--base-path", str(base),
                     "--index", "brute_force", "--k", "10"]) == 0
    assert cli.main(["export", str(tiny_run), "--base-path", str(base), "--k", "10"]) == 0
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert f"Wrote {base / '2'}/" in capsys.readouterr().out

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tfrs_youtube.cli", "serve", str(base), "--model-name", "tiny",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("Serving model tiny version 2"), (line, server.poll())
        history = json.loads((tiny_run / "config.json").read_text())["video_vocabulary"][:3]
        target = f"127.0.0.1:{port}"
        code = cli.main(["query", "--target", target, "--model-name", "tiny",
                         "--watch-history", *history, "--k", "5"])
        assert code == 0
        rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")][1:]
        assert len(rows) == 5
        returned = [row.split("|")[2].strip() for row in rows]
        assert not set(history) & set(returned)  # watched videos never come back
        scores = [float(row.split("|")[3]) for row in rows]
        assert scores == sorted(scores, reverse=True)

        assert cli.main(["query", "--target", target, "--model-name", "other",
                         "--watch-history", history[0]]) == 1
        err = capsys.readouterr().err
        assert "NOT_FOUND" in err and "other" in err
        assert cli.main(["query", "--target", target, "--model-name", "tiny",
                         "--watch-history", history[0], "--k", "11"]) == 1
        assert "k must be in [1, 10]" in capsys.readouterr().err
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    assert "tensorflow/core" not in server.stderr.read()


def test_export_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path), "--base-path", str(tmp_path / "m")]) == 2
    assert "is not a training run" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_query_rejects_malformed_features(capsys):
    assert cli.main(["query", "--model-name", "m", "--watch-history", "v1",
                     "--feature", "geo"]) == 2
    assert "--feature takes NAME=VALUE" in capsys.readouterr().err


def test_cli_quiet_environment_is_forced():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "tfrs_youtube.cli", "query", "--help"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0 and "--watch-history" in result.stdout


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_serve_errors_are_one_line(tiny_run, tmp_path, capsys):
    assert cli.main(["serve", str(tmp_path / "nope"), "--model-name", "m"]) == 2
    err = _one_line_error(capsys)
    assert "the model base path" in err and "is not a directory" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["serve", str(tmp_path / "empty"), "--model-name", "m"]) == 2
    assert "No model version to serve" in _one_line_error(capsys)
    base = tmp_path / "models"
    assert cli.main(["export", str(tiny_run), "--base-path", str(base), "--k", "10",
                     "--index", "brute_force"]) == 0
    capsys.readouterr()
    with socket.socket() as taken:  # a port another process holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", str(base), "--model-name", "m", "--port", str(port)]) == 2
        assert f"Could not bind 127.0.0.1:{port}" in _one_line_error(capsys)


@pytest.mark.parametrize("argv, message", [
    (["serve", "x", "--model-name", "m", "--port", "99999"],
     "argument --port: must be an integer in [0, 65535], got 99999"),
    (["query", "--model-name", "m", "--watch-history", "v", "--timeout", "0"],
     "argument --timeout: must be in (0, inf), got 0"),
])
def test_serve_and_query_arguments_are_checked_at_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["", "train", "evaluate", "export", "serve", "query",
                                     "quickstart", "reproduce"])
def test_every_help_has_usage_examples(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"] if command else ["--help"])
    out = capsys.readouterr().out
    assert "examples:\n  tfrs-youtube " + (command or "quickstart") in out
