"""Importing the package: Keras 2 without set-up, and a clear error when Keras 3 won."""

import os
import subprocess
import sys

import pytest


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environment.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )


def test_import_selects_keras_2_without_user_setup():
    result = _run(
        "import tfrs_youtube, tensorflow as tf; "
        "print(tf.keras.__name__); print(tfrs_youtube.layers.HistoryEmbeddingPooler.__name__)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["tf_keras.api._v2.keras", "HistoryEmbeddingPooler"]


def test_import_after_keras_3_resolved_says_how_to_fix():
    result = _run("import tensorflow as tf; tf.keras.layers; import tfrs_youtube")
    assert result.returncode != 0
    assert "ImportError: tfrs_youtube needs Keras 2" in result.stderr
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr


@pytest.mark.parametrize(
    "name", ["baselines", "data", "evaluation", "layers", "models", "tasks"]
)
def test_subpackages_have_explicit_public_api(name):
    import tfrs_youtube

    module = getattr(tfrs_youtube, name)
    assert module.__all__, name
    for symbol in module.__all__:
        assert hasattr(module, symbol), (name, symbol)


def test_explicit_keras_3_setting_is_refused():
    result = _run("import tfrs_youtube", TF_USE_LEGACY_KERAS="0")
    assert result.returncode != 0
    assert "TF_USE_LEGACY_KERAS='0' selects Keras 3" in result.stderr


def test_exports_resolve():
    import tfrs_youtube

    assert tfrs_youtube.YouTubeCandidateModel.__name__ == "YouTubeCandidateModel"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        tfrs_youtube.nope  # noqa: B018
