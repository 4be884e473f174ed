"""YouTubeCandidateConfig: validation and JSON round trips."""

import pytest

from tfrs_youtube.config import FEATURE_SETS, PAPER_ARCHITECTURE, YouTubeCandidateConfig


def _config(**kwargs):
    base = dict(video_vocabulary=["a", "b", "c"], video_counts=[5, 3, 1])
    base.update(kwargs)
    return YouTubeCandidateConfig(**base)


def test_num_videos_derived_from_vocabulary():
    assert _config().num_videos == 3


def test_json_round_trip(tmp_path):
    config = _config(
        search_vocabulary=["x", "x_y"],
        categorical_features={"geo": ["us", "de"]},
        numeric_features={"age": [10.0, 20.0, 30.0]},
        hidden_units=[16, 8],
    )
    config.save(tmp_path / "c.json")
    assert YouTubeCandidateConfig.load(tmp_path / "c.json") == config
    assert YouTubeCandidateConfig.from_dict(config.to_dict()) == config


def test_summary_hides_vocabularies():
    summary = _config().summary()
    assert summary["video_vocabulary"] == "<3 entries>"


def test_feature_sets_follow_figure_6():
    assert FEATURE_SETS["watches"] == ("watches",)
    assert FEATURE_SETS["all"] == ("watches", "search", "example_age", "demographics")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(video_vocabulary=None), r"Give `video_vocabulary` or `num_videos`.*num_videos=None"),
        (dict(num_videos=4), r"`num_videos` \(4\) must equal the length of `video_vocabulary`"),
        (dict(video_counts=[1, 2]), r"`video_counts` has 2 entries but the catalogue has 3"),
        (dict(features=["watches", "clicks"]), r"Unknown feature group\(s\) \['clicks'\]"),
        (dict(features=["search"]), r"`features` must include 'watches'"),
        (dict(sampler="zipf"), r"Unknown sampler 'zipf'.*Received: sampler='zipf'"),
        (dict(example_age_buckets=-1), r"example_age_buckets=-1"),
        (dict(example_age_buckets=2.5), r"example_age_buckets=2.5"),
        (
            dict(tie_embeddings=True, embedding_dim=8, output_dim=16),
            r"`tie_embeddings=True` needs `embedding_dim` equal to the user vector's size .*"
            r"embedding_dim=8, user vector size 16",
        ),
        (dict(history_pooling="lstm"), r"Unknown history_pooling 'lstm'"),
        (dict(recency_window=0), r"`recency_window` must be an int >= 1.*recency_window=0"),
        (dict(dropout=1.0), r"`dropout` must be a number in \[0, 1\). Received: dropout=1.0"),
        (dict(input_dropout=-0.1), r"`input_dropout` must be a number in \[0, 1\)"),
        (dict(temperature=0.0), r"`temperature` must be a number > 0. Received: temperature=0.0"),
        (dict(temperature="hot"), r"`temperature` must be a number > 0"),
        (dict(embedding_l2=-1e-4), r"`embedding_l2` must be a number >= 0"),
    ],
)
def test_invalid_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _config(**kwargs)


def test_paper_architecture_overrides_every_default_that_departs_from_the_paper():
    from tfrs_youtube.config import PAPER_ARCHITECTURE

    paper = _config(**PAPER_ARCHITECTURE)
    assert paper.history_pooling == "mean" and not paper.l2_normalize
    assert paper.dropout == paper.input_dropout == 0.0
    default = _config()
    assert {k for k in PAPER_ARCHITECTURE if getattr(default, k) != getattr(paper, k)} == {
        "history_pooling", "l2_normalize", "temperature", "dropout", "input_dropout",
        "tie_embeddings",
    }


def test_user_id_embedding_needs_a_vocabulary():
    with pytest.raises(ValueError, match="user_id_embedding_dim` must be an int >= 0"):
        _config(user_id_embedding_dim=-1)
    with pytest.raises(ValueError, match="needs `user_vocabulary`"):
        _config(user_id_embedding_dim=8)
    config = _config(user_id_embedding_dim=8, user_vocabulary=["u1", "u2"])
    assert config.summary()["user_vocabulary"] == "<2 entries>"


def test_from_training_data_counts_the_training_labels():
    import pandas as pd

    from tfrs_youtube.data import WatchLog, build_examples

    # Two examples per user: "a" is watched 6 times in training but labels at most 4 examples,
    # and every pair of examples has an "a" or "b" ("c") label with the other in its history.
    log = WatchLog(pd.DataFrame({
        "user_id": ["u1"] * 6 + ["u2"] * 6,
        "video_id": ["a", "b", "a", "b", "a", "z", "a", "c", "a", "c", "a", "z"],
        "timestamp": [1, 2, 3, 4, 5, 6] * 2,
    }))
    data = build_examples(log, examples_per_user=2, seed=0)
    config = YouTubeCandidateConfig.from_training_data(data)
    labels = list(data.train.features["label"])
    assert config.video_counts == [labels.count(v) for v in config.video_vocabulary]
    assert sum(config.video_counts) == 4 < sum(data.video_vocab.counts)


def test_tie_embeddings_defaults_to_tying_when_the_sizes_match():
    base = dict(video_vocabulary=["a", "b", "c"])
    assert YouTubeCandidateConfig(**base).ties_embeddings  # 64 and 64
    assert not YouTubeCandidateConfig(**base, embedding_dim=32).ties_embeddings
    assert not YouTubeCandidateConfig(**base, tie_embeddings=False).ties_embeddings
    assert YouTubeCandidateConfig(**base, embedding_dim=8, hidden_units=[16, 8],
                                  tie_embeddings=True).ties_embeddings
    with pytest.raises(ValueError, match=r"needs `embedding_dim` equal to the user vector's size"):
        YouTubeCandidateConfig(**base, embedding_dim=32, tie_embeddings=True)
    with pytest.raises(ValueError, match=r"Received: tie_embeddings='yes'"):
        YouTubeCandidateConfig(**base, tie_embeddings="yes")
    assert PAPER_ARCHITECTURE["tie_embeddings"] is False  # the paper's separate v_j
