"""Shared test fixtures. Importing tfrs_youtube first puts TensorFlow on Keras 2."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import tfrs_youtube  # noqa: E402, F401

ML_100K = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k_path() -> pathlib.Path:
    """The real MovieLens 100K files (RecBole atomic layout), read in place."""
    if not (ML_100K / "ml-100k.inter").exists():
        pytest.fail(f"MovieLens 100K not found at {ML_100K}; it ships in ../shared/data/ml-100k")
    return ML_100K
