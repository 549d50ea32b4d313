"""swav-train's command line: presets, and invalid arguments as argparse errors (exit 2)."""
import subprocess
import sys

import pytest

pytest.importorskip("torchvision", reason="swav-train needs torchvision (pip install '.[train]')")

from swav_kernels import backend_names  # noqa: E402
from swav_kernels.train.__main__ import main  # noqa: E402
from swav_kernels.train.args import DIGITS, PAPER, parse_args  # noqa: E402


def test_digits_preset_without_data():
    args = parse_args([])
    assert args.data is None
    for name, value in DIGITS.items():
        assert getattr(args, name) == value, name


def test_paper_preset_with_data(tmp_path):
    (tmp_path / "class0").mkdir()  # an ImageFolder needs one sub-directory per class
    args = parse_args(["--data", str(tmp_path)])
    assert (args.arch, args.nmb_crops, args.size_crops, args.nmb_prototypes) == ("resnet50", [2, 6], [224, 96], 3000)
    assert (args.min_scale_crops, args.max_scale_crops) == ([0.14, 0.05], [1.0, 0.14])
    for name, value in PAPER.items():
        assert getattr(args, name) == value, name


def test_a_run_in_the_starting_directory_changes_no_test(tmp_path):
    """The README's order: ``swav-train`` in the clone leaves ``swav-run/`` there, then
    ``pytest -q``. The preset tests parse the default ``--dump-path swav-run``; each test runs
    in its own temporary folder (tests/conftest.py), so that earlier run is not theirs."""
    (tmp_path / "swav-run").mkdir()
    for name in ("checkpoint.pt", "log.csv", "summary.json"):
        (tmp_path / "swav-run" / name).write_bytes(b"an earlier run")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "preset"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout, result.stdout[-3000:]
    assert (tmp_path / "swav-run" / "log.csv").read_bytes() == b"an earlier run"


def test_explicit_options_override_the_preset():
    args = parse_args(["--epochs", "3", "--nmb-crops", "2", "--size-crops", "12", "--min-scale-crops", "0.5",
                       "--max-scale-crops", "1", "--arch", "resnet18", "--small-stem", "--loss-backend", "reference"])
    assert (args.epochs, args.nmb_crops, args.size_crops, args.arch, args.small_stem) == (3, [2], [12], "resnet18", True)
    assert args.loss_backend == "reference" and args.batch_size == DIGITS["batch_size"]


INVALID = [
    (["--nmb-crops", "2", "6", "--size-crops", "16"], "one value per resolution"),
    (["--min-scale-crops", "0.5", "0.1", "--max-scale-crops", "0.4", "0.3"], "0 < min <= max <= 1"),
    (["--nmb-crops", "1", "--size-crops", "16", "--min-scale-crops", "0.5", "--max-scale-crops", "1"], "at least 2 crops"),
    (["--crops-for-assign", "0", "8"], "--crops-for-assign"),
    (["--crops-for-assign", "1", "1"], "--crops-for-assign"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["--batch-size", "-4"], "--batch-size"),
    (["--temperature", "0"], "--temperature: expected a number > 0"),
    (["--epsilon", "nan"], "--epsilon"),
    (["--wd", "-1"], "--wd"),
    (["--warmup-epochs", "9", "--epochs", "3"], "cannot exceed --epochs"),
    (["--loss-backend", "nope"], "--loss-backend: invalid choice"),
    (["--arch", "vgg16"], "--arch: invalid choice"),
    (["--data", "/no/such/folder"], "is not a directory"),
    (["--size-dataset", "-3"], "--size-dataset"),
    (["--queue-length", "ten"], "--queue-length"),
]


@pytest.mark.parametrize("argv, message", INVALID)
def test_invalid_arguments_are_usage_errors(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--dump-path", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: swav-train" in err and message in err


def test_resume_without_a_checkpoint_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", "--dump-path", str(tmp_path)])
    assert exit_info.value.code == 2 and "no checkpoint.pt" in capsys.readouterr().err


def test_unusable_backend_on_this_device_is_a_usage_error(capsys, tmp_path):
    """A backend name that exists but cannot run here is reported by argparse too."""
    unusable = [name for name in backend_names() if name not in ("auto", "reference")]
    if not unusable:
        pytest.skip("only the reference backend is registered")
    from swav_kernels import backend_status

    status = backend_status("cpu")
    name = next((n for n in unusable if status.get(n) is not None), None)
    if name is None:
        pytest.skip("every registered backend runs on CPU here")
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cpu", "--loss-backend", name, "--dump-path", str(tmp_path)])
    assert exit_info.value.code == 2 and f"--loss-backend {name} cannot run on cpu" in capsys.readouterr().err


def test_command_line_error_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "swav_kernels.train", "--nmb-crops", "2", "6", "--size-crops", "16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def _help_entries(text: str) -> dict[str, str]:
    """``--help`` output → {option string: its help text, lines joined}."""
    entries, current = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):  # "  --opt METAVAR   help…" or "  --a, --b"
            head, _, rest = line.strip().partition("  ")
            current = head.split(",")[0].split(" ")[0]
            entries[current] = rest.strip()
        elif current is not None and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def test_help_states_each_default_once(capsys, monkeypatch):
    """Every option's help shows exactly one default, and never the placeholder None."""
    monkeypatch.setenv("COLUMNS", "100")
    from swav_kernels.train.args import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    entries = _help_entries(capsys.readouterr().out)
    options = [action.option_strings[0] for action in parser._actions if action.option_strings[0] != "-h"]
    assert len(options) > 40 and set(entries) == {"-h", *options}, sorted(set(entries) ^ {"-h", *options})
    for option in options:
        text = entries[option]
        assert text.count("(default") == 1, f"{option}: {text}"
        assert "(default: None)" not in text, f"{option}: {text}"


@pytest.mark.parametrize("layout", ["empty", "class folder without images"])
def test_data_without_images_is_a_usage_error_and_creates_nothing(layout, capsys, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    if layout != "empty":
        (images / "cat").mkdir()
        (images / "cat" / "notes.txt").write_text("not an image")
    dump = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(images), "--dump-path", str(dump), "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage: swav-train" in err
    assert f"--data {str(images)!r}" in err and "ImageFolder" in err
    assert not dump.exists()


@pytest.mark.parametrize("earlier", ["checkpoint.pt", "log.csv", "summary.json"])
def test_a_dump_path_holding_a_run_is_refused_without_resume_or_overwrite(earlier, capsys, tmp_path):
    (tmp_path / earlier).write_bytes(b"an earlier run")
    with pytest.raises(SystemExit) as exit_info:
        main(["--dump-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage: swav-train" in err
    assert f"--dump-path {str(tmp_path)!r} already holds a run ({earlier})" in err
    assert "--resume" in err and "--overwrite" in err
    assert (tmp_path / earlier).read_bytes() == b"an earlier run"
    assert parse_args(["--dump-path", str(tmp_path), "--overwrite"]).overwrite


def test_resume_and_overwrite_exclude_each_other(capsys, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"an earlier run")
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--dump-path", str(tmp_path), "--resume", "--overwrite"])
    assert exit_info.value.code == 2 and "--resume and --overwrite" in capsys.readouterr().err


def test_missing_torchvision_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision now raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("swav-train: error: swav-train needs torchvision")
    assert "pip install '.[train]'" in err and "Traceback" not in err
