"""Keras layers of YouTube's candidate generation network (Covington et al. 2016, Figure 3).

- `HistoryEmbeddingPooler`: embeds and averages the watch history (or search tokens).
- `RecencyPooler`: that average beside a learned position-weighted one of the last watches.
- `CategoricalEmbedding`, `ExampleAge`, `NormalizedNumeric`: the other user features.
- `UserTower`: concatenates the features and runs the ReLU stack; outputs the user vector u.
- `CandidateEmbeddings`: the softmax weights v_j, b_j scored against u.
"""

from tfrs_youtube.layers.candidates import CandidateEmbeddings
from tfrs_youtube.layers.features import CategoricalEmbedding, ExampleAge, NormalizedNumeric
from tfrs_youtube.layers.pooling import COMBINERS, HistoryEmbeddingPooler
from tfrs_youtube.layers.recency import RecencyPooler
from tfrs_youtube.layers.towers import UserTower

__all__ = [
    "COMBINERS",
    "CandidateEmbeddings",
    "CategoricalEmbedding",
    "ExampleAge",
    "HistoryEmbeddingPooler",
    "NormalizedNumeric",
    "RecencyPooler",
    "UserTower",
]
