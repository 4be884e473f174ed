"""Shared test fixtures. Importing tfrs_youtube first puts TensorFlow on Keras 2."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import tfrs_youtube  # noqa: E402, F401
from tfrs_youtube.data import locate_movielens  # noqa: E402

ML_100K = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k_path() -> pathlib.Path:
    """Real MovieLens 100K, read in place: `locate_movielens` with ../shared/data/ml-100k.

    The folder in $TFRS_YOUTUBE_MOVIELENS, then ../shared/data/ml-100k (always there in this
    repository's CI), the Keras cache, the package's cache, else the checksummed GroupLens
    download. Where none can be had, the tests that need it are skipped, saying how to
    provide it.
    """
    try:
        return locate_movielens("ml-100k", search=[ML_100K])
    except FileNotFoundError as error:
        pytest.skip(f"MovieLens 100K is not available here: {error}")


@pytest.fixture(autouse=True)
def _fixed_random_seeds():
    """Every test starts from the same Python, NumPy and TensorFlow seeds.

    Layer initializers draw from TensorFlow's global generator; without this a test's weights
    depend on which tests ran before it, so a property that holds for almost every draw (a ReLU
    output that is not all zero, say) could fail once in a while. Tests that compare seeds set
    their own.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(20161)
    yield


@pytest.fixture
def free_ports():
    """`free_ports(count)`: `count` distinct free TCP ports on 127.0.0.1 (all held open while
    choosing, so none is picked twice), for the servers of a local cluster."""

    def pick(count: int) -> list[int]:
        import socket

        sockets = []
        try:
            for _ in range(count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
            return [sock.getsockname()[1] for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()

    return pick
