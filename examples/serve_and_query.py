"""Export a model, serve it over TF Serving's gRPC API, and query it with `Client`.

Trains briefly on the built-in synthetic log, exports `<base>/1` (ScaNN top-N index), starts the
local server (`python -m tfrs_youtube.serving.server`, the same as `tfrs-youtube serve`) on a free
port in a subprocess, asks for recommendations for a few held-out users, and stops the server.
Against a real TensorFlow Serving, only the server command changes.

    python examples/serve_and_query.py [--base-path DIR] [--epochs 1]
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import tensorflow as tf

import tfrs_youtube  # noqa: F401  (puts TensorFlow on Keras 2 first)
from tfrs_youtube.data import build_examples, generate_synthetic_log
from tfrs_youtube.export import export_saved_model
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel
from tfrs_youtube.serving import Client, ServingError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(client: Client, server: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            client.model_status(timeout=1.0)
            return
        except ServingError:
            time.sleep(0.5)
    raise TimeoutError("the server did not start in time")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-path", default=None, help="model base path (default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    base_path = args.base_path or os.path.join(tempfile.mkdtemp(), "youtube")

    data = build_examples(generate_synthetic_log("tiny", seed=0).log)
    config = YouTubeCandidateConfig.from_training_data(
        data, embedding_dim=16, output_dim=16, depth=1, num_sampled=64
    )
    model = YouTubeCandidateModel(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    keys = sorted(set(model.feature_layers) | {"label"})
    model.fit(data.train.to_dataset(batch_size=256, shuffle=True, keys=keys),
              epochs=args.epochs, verbose=0)
    version_dir = export_saved_model(model, base_path, k=10)
    print(f"exported {version_dir}")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tfrs_youtube.serving.server", base_path,
         "--model-name", "youtube", "--port", str(port)]
    )
    try:
        with Client(f"127.0.0.1:{port}", model_name="youtube") as client:
            wait_until_serving(client, server)
            holdout = data.holdout.features
            inputs = [name for name in model.feature_layers if name not in ("watch_history",
                      "search_tokens", "example_age")]
            for row in range(3):
                history = [v for v in holdout["watch_history"][row] if v]
                tokens = None
                if "search_tokens" in model.feature_layers:
                    tokens = [t for t in holdout["search_tokens"][row] if t]
                features = {name: holdout[name][row] for name in inputs}
                result = client.recommend(history, k=5, search_tokens=tokens, features=features)
                print(f"user {holdout['user_id'][row]} (watched {len(history)}): "
                      f"{result.ids} from version {result.model_version}")
    finally:
        server.send_signal(signal.SIGTERM)
        print(f"server stopped with exit code {server.wait(timeout=60)}")


if __name__ == "__main__":
    main()
