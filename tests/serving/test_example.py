"""examples/serve_and_query.py: export, serve in a subprocess, query, stop."""

import ast
import os
import pathlib
import re
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "serve_and_query.py"


def test_serve_and_query_example_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--base-path", str(tmp_path / "youtube")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "youtube" / "1" / "saved_model.pb").is_file()
    rows = re.findall(r"^user \S+ \(watched \d+\): (\[.*\]) from version 1$", result.stdout, re.M)
    assert len(rows) == 3, result.stdout
    for row in rows:
        ids = ast.literal_eval(row)
        assert len(ids) == 5 and all(re.fullmatch(r"v\d+", v) for v in ids)
    assert "server stopped with exit code 0" in result.stdout
