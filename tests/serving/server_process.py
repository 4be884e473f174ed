"""The local server as a subprocess, for the serving tests: start it, wait for it, stop it.

`python -m tfrs_youtube.serving.server` with stdout piped (the "Serving model ..." line) and
stderr in a log file the test can read (`process.log`). Every wait is bounded in time.
"""

import os
import select
import shutil
import subprocess
import sys
import time

import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def start_server(base, log, model, *flags, port=0):
    """Starts the server on `base` as `model` on `port` (0: a free one, read from the line)."""
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tfrs_youtube.serving.server", str(base), "--model-name",
             model, "--port", str(port), "--poll-seconds", "0.2", *flags],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=ENV,
        )
    process.log = log
    return process


def serving_line(process, timeout=120):
    """The "Serving model ..." line (stripped), read without blocking past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            assert line, f"the server ended ({process.poll()}): {process.log.read_text()[-2000:]}"
            if line.startswith("Serving model"):
                return line.strip()
    raise AssertionError(f"no Serving line in {timeout}s: {process.log.read_text()[-2000:]}")


def grpc_port(line):
    """The gRPC port of a "Serving model NAME version V on HOST:PORT[, REST on ...]" line."""
    return int(line.split(", REST on ")[0].rsplit(":", 1)[1])


def kill(process):
    if process.poll() is None:
        process.kill()
    process.wait(timeout=60)


def self_signed(tmp_path):
    """A self-signed certificate and key for 127.0.0.1 and localhost (skips without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed here")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key
