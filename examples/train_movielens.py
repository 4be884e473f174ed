"""Train the candidate generation network on MovieLens 100K through the Python API.

    python examples/train_movielens.py [PATH_TO_ML_100K] [--epochs 5]

Without PATH, MovieLens 100K is looked up by `tfrs_youtube.data.locate_movielens`: the folder
in $TFRS_YOUTUBE_MOVIELENS, ../shared/data/ml-100k (the RecBole copy), the Keras cache, else the
GroupLens download. Any GroupLens layout works too (a folder with u.data, ratings.dat or
ratings.csv).
"""

import argparse
import pathlib

import tensorflow as tf

import tfrs_youtube  # noqa: F401  (puts TensorFlow on Keras 2 first)
from tfrs_youtube.data import build_examples, load_movielens, locate_movielens
from tfrs_youtube.evaluation import (
    evaluate_model,
    evaluate_scorer,
    format_table,
    most_popular_scorer,
)
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

DEFAULT_PATH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", default=None,
                        help="MovieLens folder; default: $TFRS_YOUTUBE_MOVIELENS, "
                        "../shared/data/ml-100k, the Keras cache, else the GroupLens download")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    path = args.path or locate_movielens("ml-100k", search=[DEFAULT_PATH])

    # Every rating is a watch; each user's last one is held out (paper 3.4).
    data = build_examples(load_movielens(path), max_history=50)
    config = YouTubeCandidateConfig.from_training_data(
        data, embedding_dim=64, output_dim=64, depth=2, num_sampled=512
    )
    model = YouTubeCandidateModel(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.003))

    keys = sorted(set(model.feature_layers) | {"label"})
    train = data.train.to_dataset(batch_size=256, shuffle=True, keys=keys)
    model.fit(train, epochs=args.epochs, verbose=2)

    ks = (10, 50, 100)
    results = {
        "youtube_dnn": evaluate_model(model, data.holdout, data.video_vocab, ks),
        "most_popular": evaluate_scorer(
            most_popular_scorer(data.video_vocab), data.holdout, data.video_vocab, ks
        ),
    }
    print(format_table(results, ks))


if __name__ == "__main__":
    main()
