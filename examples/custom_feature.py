"""Add a feature of your own by subclassing `YouTubeCandidateModel`.

MovieLens 100K knows each user's occupation, which the paper's feature set does not have.
The subclass adds an occupation embedding next to the paper's features; nothing else changes.

    python examples/custom_feature.py [PATH_TO_ML_100K] [--epochs 3]
"""

import argparse
import pathlib

import tensorflow as tf

import tfrs_youtube  # noqa: F401  (puts TensorFlow on Keras 2 first)
from tfrs_youtube.data import build_examples, load_movielens, locate_movielens
from tfrs_youtube.evaluation import evaluate_model
from tfrs_youtube.layers import CategoricalEmbedding
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

DEFAULT_PATH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


class OccupationModel(YouTubeCandidateModel):
    """The paper's network plus an embedding of the user's occupation."""

    def __init__(self, config, occupations, **kwargs):
        self.occupations = list(occupations)  # read by build_feature_layers
        super().__init__(config, **kwargs)

    def build_feature_layers(self):
        layers = super().build_feature_layers()
        layers["occupation"] = CategoricalEmbedding(
            output_dim=4, vocabulary=self.occupations, name="occupation_embedding"
        )
        return layers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", default=None,
                        help="MovieLens folder; default: $TFRS_YOUTUBE_MOVIELENS, "
                        "../shared/data/ml-100k, the Keras cache, else the GroupLens download")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    path = args.path or locate_movielens("ml-100k", search=[DEFAULT_PATH])

    data = build_examples(load_movielens(path))
    occupations = data.categorical_vocabs["occupation"].ids
    config = YouTubeCandidateConfig.from_training_data(
        data, embedding_dim=32, output_dim=32, depth=1, num_sampled=256
    )
    # The paper's demographics (gender, age) stay in the config; occupation is the subclass's.
    config.categorical_features.pop("occupation", None)
    model = OccupationModel(config, occupations)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.003))
    keys = sorted(set(model.feature_layers) | {"label"})
    model.fit(data.train.to_dataset(batch_size=256, shuffle=True, keys=keys),
              epochs=args.epochs, verbose=2)
    metrics = evaluate_model(model, data.holdout, data.video_vocab, ks=(50,))
    print(f"feature layers: {sorted(model.feature_layers)}")
    print(f"holdout recall@50 with occupation: {metrics['recall_at_50']:.4f}")


if __name__ == "__main__":
    main()
