"""swav-train's command line: presets, and invalid arguments as argparse errors (exit 2)."""
import subprocess
import sys

import pytest
import torch

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
    message = usage_error(["--device", "cpu", "--loss-backend", name, "--dump-path", str(tmp_path)], capsys)
    usable = ", ".join(["auto"] + [n for n, reason in status.items() if reason is None])
    assert message.startswith(f"--loss-backend {name} cannot run on cpu: {status[name]}")
    assert message.endswith(f"; available here: {usable}")


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


def usage_error(argv, capsys) -> str:
    """The one error line of ``swav-train argv`` (exit status 2, argparse's usage above it)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("usage: swav-train") and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("swav-train: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    return errors[0].removeprefix("swav-train: error: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_a_usage_error(capsys, tmp_path):
    message = usage_error(["--device", "cuda", "--dump-path", str(tmp_path / "run")], capsys)
    assert message.startswith("--device cuda: no CUDA device here (torch ") and message.endswith("available: auto, cpu")
    assert not (tmp_path / "run").exists()


def fake_gpus(monkeypatch, count: int, bf16: bool = True) -> None:
    """torch.cuda reports ``count`` GPUs (none is touched: the checks run before any CUDA call)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args, **kwargs: "Tesla V100-SXM2-16GB")


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_more_local_ranks_than_gpus_is_a_usage_error(device, monkeypatch, capsys, tmp_path):
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    message = usage_error(["--device", device, "--dump-path", str(tmp_path)], capsys)
    assert message == (f"--device {device}: local rank 3 needs a GPU of its own and 2 are visible; start at most 2 "
                       "process(es) per node (torchrun --nproc_per_node 2), or --device cpu")


def test_bf16_autocast_on_a_gpu_without_bf16_is_a_usage_error(monkeypatch, capsys, tmp_path):
    fake_gpus(monkeypatch, 1, bf16=False)
    message = usage_error(["--device", "cuda", "--amp", "--dump-path", str(tmp_path)], capsys)
    assert message == ("--amp: bf16 autocast needs a GPU with bfloat16 (compute capability >= 8.0), which "
                       "Tesla V100-SXM2-16GB is not; available: --no-amp")


@pytest.mark.parametrize("environment, expected", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer (torchrun sets it)"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0: a run needs at least 1 process"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is outside the WORLD_SIZE=2 processes (ranks 0 to 1)"),
    ({"LOCAL_RANK": "-1"}, "LOCAL_RANK=-1 must be >= 0"),
])
def test_an_impossible_world_is_a_usage_error(environment, expected, monkeypatch, capsys, tmp_path):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert usage_error(["--device", "cpu", "--dump-path", str(tmp_path)], capsys) == expected


def test_sync_bn_on_cpu_ranks_is_a_usage_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    message = usage_error(["--device", "cpu", "--sync-bn", "--dump-path", str(tmp_path)], capsys)
    assert message.startswith("--sync-bn: torch's SyncBatchNorm runs on CUDA devices only") and "--no-sync-bn" in message
