"""The command line's argument checks: choices match the library, bad values stop at parsing."""

import subprocess
import sys

import pytest

from tfrs_youtube import __version__, cli, distribute, pipeline
from tfrs_youtube.data import SyntheticConfig
from tfrs_youtube.reproduction import STUDIES
from tfrs_youtube.tasks.samplers import SAMPLERS


def test_choices_are_the_librarys():
    assert cli.SAMPLERS is SAMPLERS  # one list: config.SAMPLERS
    assert sorted(cli.OPTIMIZERS) == sorted(pipeline._OPTIMIZERS)
    assert cli.STRATEGIES == distribute.STRATEGIES
    assert cli.ENGINES == pipeline.ENGINES
    assert cli.STUDIES == STUDIES
    for preset in cli.PRESETS:
        SyntheticConfig.preset(preset)  # each one exists


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"tfrs-youtube {__version__}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--sampler", "zipf"], "argument --sampler: invalid choice: 'zipf'"),
        (["train", "--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
        (["train", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        (["train", "--dropout", "1.5"], "argument --dropout: must be in [0, 1.0), got 1.5"),
        (["train", "--input-dropout", "-0.1"], "argument --input-dropout: must be in"),
        (["train", "--temperature", "0"], "argument --temperature: must be in (0, inf), got 0"),
        (["train", "--learning-rate", "fast"], "argument --learning-rate: must be a number"),
        (["train", "--embedding-l2", "-1"], "argument --embedding-l2: must be in [0, inf)"),
        (["train", "--user-id-embedding-dim", "-1"], "must be an integer >= 0, got -1"),
        (["train", "--patience", "0"], "argument --patience: must be a positive integer"),
        (["train", "--ema-momentum", "1"], "argument --ema-momentum: must be in (0, 1.0), got 1"),
        (["train", "--data", "/nonexistent/events.csv"],
         "argument --data: expected 'synthetic' or an existing file or folder, got "
         "'/nonexistent/events.csv'"),
        (["reproduce", "--studies", "nope"], "argument --studies: invalid choice: 'nope'"),
    ],
)
def test_bad_arguments_stop_at_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _fresh_python(code, timeout):
    """Runs `code` in a new interpreter (nothing imported yet); returns its stdout lines."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-500:]
    return result.stdout.strip().splitlines()


def test_bad_arguments_are_refused_before_tensorflow_is_imported():
    code = (
        "import sys\n"
        "from tfrs_youtube import cli\n"
        "try:\n"
        "    cli.main(['train', '--dropout', '2'])\n"
        "except SystemExit as stop:\n"
        "    print(stop.code, 'tensorflow' in sys.modules)\n"
    )
    assert _fresh_python(code, timeout=120)[-1].split() == ["2", "False"]


def test_client_needs_neither_the_training_stack_nor_scann():
    from tfrs_youtube import keys
    from tfrs_youtube.data import examples
    from tfrs_youtube.serving import signatures

    # One spelling of each feature key, for the examples and the signatures alike.
    for name in ("WATCH_HISTORY", "SEARCH_TOKENS", "EXAMPLE_AGE"):
        assert getattr(signatures, name) is getattr(examples, name) is getattr(keys, name)
    code = (
        "import sys\n"
        "import tfrs_youtube.serving.client\n"
        "print(sorted(m for m in ('tensorflow_recommenders', 'scann', 'tfrs_youtube.models',"
        " 'tfrs_youtube.export') if m in sys.modules))\n"
    )
    assert _fresh_python(code, timeout=300)[-1] == "[]"


def test_reproduce_without_matplotlib_is_one_line_naming_the_extra():
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None  # as if not installed\n"
        "from tfrs_youtube import cli\n"
        "print('exit', cli.main(['reproduce', '--quick', '--output-dir', '/nonexistent/x']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "exit 2", result.stderr[-500:]
    err = result.stderr.strip().splitlines()
    assert "pip install 'tfrs_youtube[reproduce]'" in err[-1] and "Traceback" not in result.stderr


def test_figures_leave_the_matplotlib_backend_alone(tmp_path):
    # Neither a backend switch (matplotlib.use) nor pyplot, whose import picks one.
    code = (
        "import sys\n"
        "import matplotlib\n"
        "switches = []\n"
        "matplotlib.use = lambda *args, **kwargs: switches.append(args)\n"
        "from tfrs_youtube.reproduction.common import Context, subplots\n"
        "figure, axes = subplots(figsize=(2, 2))\n"
        "axes.plot([0, 1], [1, 0])\n"
        f"print(Context('quick', output_dir={str(tmp_path)!r}).save_figure(figure, 'f.png'))\n"
        "print(switches, 'matplotlib.pyplot' in sys.modules)\n"
    )
    assert _fresh_python(code, timeout=300)[-2:] == ["f.png", "[] False"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
