"""YouTubeCandidateConfig: validation and JSON round trips."""

import pytest

from tfrs_youtube.config import FEATURE_SETS, YouTubeCandidateConfig


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
            r"`tie_embeddings=True` needs `embedding_dim == output_dim`",
        ),
    ],
)
def test_invalid_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _config(**kwargs)
