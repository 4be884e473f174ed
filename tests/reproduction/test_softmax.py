"""Tests of the sampled/full softmax, logQ and sampler study on a quick run."""

import math

import pytest

from tfrs_youtube.reproduction import softmax
from tfrs_youtube.reproduction.common import Context

NAMES = [
    "log_uniform (default)", "full softmax", "uniform", "unigram", "in_batch", "mixed",
    "log_uniform, no logQ",
]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    context = Context("quick", output_dir=tmp_path_factory.mktemp("softmax"))
    return context, softmax.run(context)


def test_variants_cover_every_sampler_of_the_config():
    by_name = dict(softmax.variants())
    assert list(by_name) == NAMES
    # The config's `sampler` field accepts exactly these five (config.py docstring).
    samplers = {o.get("sampler", "log_uniform") for n, o in by_name.items() if "no logQ" not in n}
    assert samplers == {"log_uniform", "unigram", "uniform", "in_batch", "mixed"}
    assert by_name["full softmax"] == {"num_sampled": None}
    assert by_name["log_uniform, no logQ"] == {"logq_correction": False}


def test_negatives_per_step_by_hand():
    # 3,000 videos, batch 1,024, 1,024 sampled: full softmax scores the 2,999 other videos.
    assert softmax.negatives_per_step("log_uniform", None, 1024, 3000) == 2999
    assert softmax.negatives_per_step("log_uniform", 1024, 256, 3000) == 1024
    assert softmax.negatives_per_step("in_batch", 1024, 256, 3000) == 256
    assert softmax.negatives_per_step("mixed", 1024, 256, 3000) == 1280


def test_percent_of_by_hand():
    assert softmax.percent_of(0.2, 0.25) == pytest.approx(80.0)
    assert softmax.percent_of(0.5, 0.25) == pytest.approx(200.0)
    assert math.isnan(softmax.percent_of(0.1, 0.0))


def test_figure_is_a_png(study):
    context, result = study
    assert result.figures == ["softmax.png"]
    assert (context.output_dir / "softmax.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](softmax.png)" in result.markdown


def test_data_keys_and_ranges(study):
    context, result = study
    data = result.data
    assert result.name == "softmax"
    assert (data["epochs"], data["batch_size"]) == (1, 256)
    num_videos = data["num_videos"]
    assert num_videos == len(context.data().video_vocab) > 0
    rows = data["variants"]
    assert list(rows) == NAMES
    for name, row in rows.items():
        recalls = [row[f"recall_at_{k}"] for k in (10, 50, 100)]
        assert 0 <= recalls[0] <= recalls[1] <= recalls[2] <= 1, name
        assert 0 <= row["map_at_100"] <= row["recall_at_100"], name
        assert row["seconds_per_epoch"] > 0
        # Only timing keys may vary between two runs with the same seed.
        assert [k for k in row if "second" in k] == ["seconds_per_epoch"]
    full = rows["full softmax"]
    assert full["num_sampled"] is None and full["sampler"] is None
    assert full["negatives_per_step"] == num_videos - 1
    assert full["recall_at_100_percent_of_full"] == pytest.approx(100.0)
    # The default caps num_sampled at half the catalogue: min(1024, num_videos // 2).
    sampled = min(1024, num_videos // 2)
    assert rows["log_uniform (default)"]["negatives_per_step"] == sampled
    assert rows["in_batch"]["negatives_per_step"] == 256
    assert rows["mixed"]["negatives_per_step"] == sampled + 256
    assert rows["log_uniform, no logQ"]["logq_correction"] is False
    assert rows["unigram"]["logq_correction"] is True
    default = rows["log_uniform (default)"]
    assert default["recall_at_100_percent_of_full"] == pytest.approx(
        100 * default["recall_at_100"] / full["recall_at_100"]
    )


def test_numbers_appear_in_markdown(study):
    _, result = study
    rows = result.data["variants"]
    for name, row in rows.items():
        line = next(line for line in result.markdown.splitlines() if line.startswith(f"| {name} |"))
        for key in ("recall_at_10", "recall_at_50", "recall_at_100", "map_at_100",
                    "recall_at_100_percent_of_full", "seconds_per_epoch"):  # fmt: skip
            assert f"{row[key]:.4f}" in line, (name, key)
        assert f"| {row['negatives_per_step']} |" in line
    default, off = rows["log_uniform (default)"], rows["log_uniform, no logQ"]
    helps = default["recall_at_100"] > off["recall_at_100"]
    assert ("correction helps" if helps else "correction does not help") in result.markdown
    reached = default["recall_at_100_percent_of_full"]
    assert f"reaches {reached:.1f}% of the full softmax's Recall@100" in result.markdown
    assert "benchmarks/train_throughput.py" in result.markdown
