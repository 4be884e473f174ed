"""Training on real MovieLens 100K, run directories, and the command line."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tfrs_youtube import cli, pipeline
from tfrs_youtube.config import YouTubeCandidateConfig
from tfrs_youtube.evaluation import evaluate_model

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ml100k_run(ml100k_path, tmp_path_factory):
    spec = pipeline.DataSpec(source=str(ml100k_path), seed=0)
    data = pipeline.prepare_data(spec)
    config = YouTubeCandidateConfig.from_training_data(
        data, embedding_dim=32, output_dim=32, depth=1, num_sampled=256, seed=0
    )
    model, info = pipeline.train(data, config, epochs=3, batch_size=256, verbose=0)
    results = pipeline.evaluate(model, data, ks=(50, 100))
    run_dir = pipeline.save_run(tmp_path_factory.mktemp("run"), model, spec, {"holdout": results})
    return data, model, results, run_dir, info


def test_short_fit_beats_most_popular_on_ml100k(ml100k_run):
    data, _, results, _, info = ml100k_run
    assert len(data.holdout) == 943  # every ml-100k user has at least 20 ratings
    assert info["loss"][-1] < info["loss"][0]
    model_recall = results["youtube_dnn"]["recall_at_50"]
    popular_recall = results["most_popular"]["recall_at_50"]
    assert model_recall > popular_recall, results


def test_run_directory_round_trip(ml100k_run):
    data, model, results, run_dir, _ = ml100k_run
    for name in ("config.json", "data.json", "metrics.json"):
        assert (run_dir / name).exists()
    restored, spec = pipeline.load_run(run_dir)
    batch = data.holdout.to_dataset(batch_size=16, keys=sorted(model.feature_layers))
    features = next(iter(batch))
    np.testing.assert_allclose(
        restored.scores(features).numpy(), model.scores(features).numpy(), rtol=1e-5
    )
    again = pipeline.evaluate_run(run_dir, ks=(50, 100))
    assert again["youtube_dnn"]["recall_at_50"] == pytest.approx(
        results["youtube_dnn"]["recall_at_50"], abs=1e-9
    )


def test_load_run_rejects_other_directories(tmp_path):
    with pytest.raises(ValueError, match="is not a training run: config.json is missing"):
        pipeline.load_run(tmp_path)


def test_bad_source_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="`source` must be 'synthetic', a MovieLens path or a "
                       "CSV, TSV or Parquet watch log, and it does not exist"):
        pipeline.load_log(pipeline.DataSpec(source=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'"):
        pipeline.make_optimizer("rmsprop", 0.1)
    for bad in (0.0, 1.0, True):
        with pytest.raises(ValueError, match=rf"Received: ema_momentum={bad!r}"):
            pipeline.make_optimizer("adam", 0.1, ema_momentum=bad)
    averaged = pipeline.make_optimizer("adagrad", 0.1, ema_momentum=0.99)
    assert averaged.use_ema and averaged.ema_momentum == 0.99
    assert not pipeline.make_optimizer("sgd", 0.1).use_ema


def test_auto_optimizer_is_adam_for_small_catalogues_and_lazy_adam_beyond():
    from tfrs_youtube.optimizers import LazyAdam

    limit = pipeline.AUTO_ADAM_MAX_VIDEOS
    assert pipeline.resolve_optimizer("auto", limit) == "adam"
    assert pipeline.resolve_optimizer("auto", limit + 1) == "lazy_adam"
    assert pipeline.resolve_optimizer("adagrad", 10**7) == "adagrad"
    with pytest.raises(ValueError, match="Unknown optimizer 'auto'"):
        pipeline.make_optimizer("auto", 0.1)  # resolved first, with the catalogue size
    with pytest.raises(ValueError, match="Unknown optimizer 'nadam'"):
        pipeline.resolve_optimizer("nadam", 10)
    assert isinstance(pipeline.make_optimizer(pipeline.resolve_optimizer("auto", 10**6), 0.1),
                      LazyAdam)


def test_cli_train_and_evaluate(ml100k_path, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main([
        "train", "--data", str(ml100k_path), "--epochs", "1", "--depth", "1",
        "--embedding-dim", "16", "--output-dim", "16", "--num-sampled", "128",
        "--output", str(out), "--k", "50",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| youtube_dnn |" in printed and "| most_popular |" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["holdout"]) == {"youtube_dnn", "most_popular"}
    # Validation is on by default: the chosen epoch and the curve are in metrics.json.
    assert metrics["train"]["chosen_epoch"] == 1 and metrics["train"]["max_epochs"] == 1
    assert len(metrics["train"]["validation_curve"]) == 1
    assert metrics["train"]["validation_users"] == 943
    assert "validation ndcg_at_10" in printed and "kept epoch 1" in printed
    # Not a terminal: one line for the one epoch, none of Keras's, no progress-bar redraws.
    epoch_lines = [line for line in printed.splitlines() if line.startswith("  epoch ")]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("  epoch 1/1: loss ")
    assert " - loss: " not in printed and "Epoch 1/1" not in printed
    assert "\x08" not in printed and "\r" not in printed
    assert "total_loss" not in printed and "regularization_loss" not in printed
    assert cli.main(["evaluate", str(out), "--k", "50"]) == 0
    assert "recall@50" in capsys.readouterr().out


def test_validation_split_is_each_users_last_training_watch(ml100k_path):
    spec = pipeline.DataSpec(source=str(ml100k_path), seed=0)
    log = pipeline.load_log(spec)
    data = pipeline.prepare_data(spec, log)
    validation = pipeline.validation_split(spec, log)
    watches = log.watches
    by_user = {u: g for u, g in watches.groupby("user_id", sort=False)}
    holdout_users = validation.holdout.features["user_id"]
    assert len(holdout_users) == 943
    for i in range(0, 943, 97):  # a sample of users, against the raw log
        rows = by_user[holdout_users[i]]
        assert validation.holdout.features["label"][i] == rows["video_id"].iloc[-2]
        assert list(validation.holdout.seen[i]) == list(rows["video_id"].iloc[:-2])
    # The validation labels are no longer training labels, and nothing of the holdout is.
    assert len(validation.train) == len(data.train) - 943
    assert validation.video_vocab.counts.sum() < data.video_vocab.counts.sum()
    # (user, movie) pairs are unique in MovieLens: no held-out rating is a training label.
    test_rows = set(zip(data.holdout.features["user_id"], data.holdout.features["label"]))
    train_rows = set(zip(validation.train.features["user_id"], validation.train.features["label"]))
    assert not test_rows & train_rows


def test_train_with_validation_restores_the_best_epoch(ml100k_path):
    spec = pipeline.DataSpec(source=str(ml100k_path), seed=0)
    validation = pipeline.validation_split(spec)
    config = YouTubeCandidateConfig.from_training_data(
        validation, embedding_dim=16, output_dim=16, depth=1, num_sampled=128, seed=0
    )
    model, info = pipeline.train(validation, config, epochs=3, validation=validation,
                                 patience=1, verbose=0)
    curve = [row["ndcg_at_10"] for row in info["validation_curve"]]
    assert info["chosen_epoch"] == int(np.argmax(curve)) + 1
    kept = evaluate_model(model, validation.holdout, validation.video_vocab, (10,))
    assert kept["ndcg_at_10"] == pytest.approx(max(curve))
    with pytest.raises(ValueError, match="schedule_epochs"):
        pipeline.train(validation, config, epochs=3, schedule_epochs=2)


def test_cli_reports_errors(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "is not a training run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--epochs", "0"])


def test_quickstart_runs_from_the_console_script(tmp_path):
    # The README's main job, in a fresh process, with its TensorFlow log noise kept out.
    result = subprocess.run(
        [sys.executable, "-m", "tfrs_youtube.cli", "quickstart", "--epochs", "1",
         "--output", str(tmp_path / "qs")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| youtube_dnn |" in result.stdout
    assert "tensorflow/core" not in result.stderr  # no C++ log lines
    assert (tmp_path / "qs" / "metrics.json").exists()
    # It ends by exporting version 1 for TF Serving and printing how to serve and query it.
    assert (tmp_path / "saved_models" / "quickstart" / "1" / "saved_model.pb").exists()
    assert "tfrs-youtube serve saved_models/quickstart --model-name quickstart" in result.stdout
    assert "tfrs-youtube query --model-name quickstart --watch-history v" in result.stdout


@pytest.mark.parametrize("script", ["train_movielens.py", "custom_feature.py"])
def test_examples_run(script, ml100k_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), str(ml100k_path), "--epochs", "1"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recall" in result.stdout.lower()


def test_evaluate_reports_cold_start_users_apart():
    import pandas as pd

    from tfrs_youtube.data import WatchLog, build_examples
    from tfrs_youtube.evaluation import model_ranks, rank_metrics

    # Users c0..c4 watch two videos in the same second: their held-out watch has no earlier
    # watch (cold start); users w0..w9 have a history.
    rows = [(f"c{i}", v, 5.0) for i in range(5) for v in ("a", "b")]
    rows += [(f"w{i}", v, float(t)) for i in range(10) for t, v in enumerate("abcd")]
    data = build_examples(WatchLog(pd.DataFrame(rows, columns=["user_id", "video_id",
                                                               "timestamp"])))
    config = YouTubeCandidateConfig.from_training_data(
        data, embedding_dim=4, output_dim=4, depth=1, num_sampled=None
    )
    model, _ = pipeline.train(data, config, epochs=1, verbose=0)
    results = pipeline.evaluate(model, data, ks=(2,))
    assert results["youtube_dnn (cold start)"]["num_users"] == 5
    assert results["youtube_dnn (warm)"]["num_users"] == 10
    ranks = model_ranks(model, data.holdout, pipeline.model_vocabulary(model))
    cold = np.array([u.startswith("c") for u in data.holdout.features["user_id"]])
    assert results["youtube_dnn (cold start)"]["recall_at_2"] == pytest.approx(
        rank_metrics(ranks[cold], (2,))["recall_at_2"])
    assert results["youtube_dnn"]["recall_at_2"] == pytest.approx(
        rank_metrics(ranks, (2,))["recall_at_2"])


def _tiny_model(**overrides):
    from tfrs_youtube.models import YouTubeCandidateModel

    config = YouTubeCandidateConfig(
        video_vocabulary=["a", "b", "c"], features=["watches"], embedding_dim=4, output_dim=4,
        depth=1, num_sampled=None, metrics_k=[], **overrides)
    model = YouTubeCandidateModel(config)
    model.scores(model.placeholder_features())
    return model


def test_save_run_replaces_a_run_whole_and_load_run_refuses_an_incomplete_one(
    tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    spec = pipeline.DataSpec(source="synthetic")
    pipeline.save_run(run_dir, _tiny_model(sampler="uniform"), spec, {"first": 1})
    (run_dir / "stale.txt").write_text("from the first run")
    pipeline.save_run(run_dir, _tiny_model(sampler="log_uniform", temperature=0.5), spec,
                      {"second": 2})
    restored, _ = pipeline.load_run(run_dir)
    assert restored.config.temperature == 0.5  # the second run's config and weights only
    assert not (run_dir / "stale.txt").exists()
    assert json.loads((run_dir / "metrics.json").read_text()) == {"second": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing left beside it

    # Killed while saving (the weights fail to write): the previous run stays whole.
    third = _tiny_model(temperature=0.25)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(third, "save_weights", crash)
    with pytest.raises(KeyboardInterrupt):
        pipeline.save_run(run_dir, third, spec, {"third": 3})
    assert pipeline.load_run(run_dir)[0].config.temperature == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    (run_dir / pipeline.COMPLETE).unlink()  # as a run written in place and killed would be
    with pytest.raises(ValueError, match="is an incomplete run \\(no COMPLETE marker"):
        pipeline.load_run(run_dir)
