"""The `mpm` command assembles every command group and reports errors in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mpm.cli import COMMAND_MODULES, build_parser, main


def test_every_command_group_registers() -> None:
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert {"fetch", "prepare", "synth", "train-demo", "eval", "bench", "track", "tables"} <= set(choices)
    assert len(COMMAND_MODULES) == 8


def test_errors_are_one_line_with_status_2(tmp_path, capsys) -> None:
    rc = main(["eval", "--data-root", str(tmp_path), "--dataset", "ade20k", "--checkpoint",
               str(tmp_path / "missing.pth"), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("mpm eval: error:")


def test_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "mpm.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("mpm ")


@pytest.mark.parametrize("argv", [["fetch", "list"], ["bench", "--list-targets"]])
def test_listing_commands(argv, capsys) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out.strip()


def _one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(prog) and ": error: " in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, named", [
    (["prepare", "ade20k", "--root", "{tmp}", "--workers", "0"], "argument --workers: expected an integer >= 1"),
    (["prepare", "ade20k", "--root", "{tmp}/nowhere"], "argument --root: {tmp}/nowhere does not exist"),
    (["fetch", "dataset", "ade20k", "--root", "{tmp}", "--retries", "-1"],
     "argument --retries: expected an integer >= 0"),
    (["fetch", "dataset", "ade20k", "--root", "{file}"], "argument --root: {file} is a file, not a folder"),
    (["fetch", "checkpoint", "x", "--dest", "{tmp}", "--from", "{tmp}/no.pth"],
     "argument --from: {tmp}/no.pth does not"),
    (["synth", "--root", "{file}/sub"], "argument --root: cannot write there: {file} is a file, not a folder"),
    (["synth", "--root", "{tmp}", "--n-val", "-2"], "argument --n-val: expected an integer >= 0"),
    (["synth", "--root", "{tmp}", "--size", "8"], "argument --size: expected an integer >= 32"),
    (["tables", "--eval-results", "{tmp}/none.json"], "argument --eval-results: {tmp}/none.json does not exist"),
    (["tables", "--eval-results", "{tmp}", "--out-tables", "{file}"], "argument --out-tables: {file} is a file"),
    (["tables", "--eval-results", "{tmp}", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1"),
    (["bench", "--images", "{tmp}", "--crop", "0", "--out", "{tmp}/b.json"], "argument --crop: expected SIZE or H,W"),
    (["bench", "--images", "{tmp}", "--iters", "0", "--out", "{tmp}/b.json"], "argument --iters: expected an integer"),
    (["bench", "--images", "{tmp}", "--threads", "0", "--out", "{tmp}/b.json"], "argument --threads: expected an"),
    (["bench", "--images", "{tmp}", "--warmup", "-1", "--out", "{tmp}/b.json"], "argument --warmup: expected an"),
    (["bench", "--images", "{tmp}", "--out", "{file}/b.json"], "argument --out: cannot write there: {file} is a file"),
    (["bench", "--images", "{tmp}/none", "--out", "{tmp}/b.json"], "benchmark image source {tmp}/none does not exist"),
    (["bench", "--images", "{tmp}", "--method", "none", "--schedule", "2,5", "--out", "{tmp}/b.json"],
     "--schedule 2,5: method 'none' never merges"),
    (["bench", "--images", "{tmp}", "--cooldown-max-temp", "50", "--cooldown-poll", "0", "--out", "{tmp}/b.json"],
     "argument --cooldown-poll: expected a number > 0"),
    (["synth", "--root", "{tmp}/s", "--bogus"], "mpm: error: unrecognized arguments: --bogus"),
])
def test_bad_values_are_one_line_naming_the_option(tmp_path, capsys, argv, named) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    fill = {"tmp": tmp_path, "file": file}
    rc = main([a.format(**fill) for a in argv])
    err = _one_line_error(capsys, "mpm")
    assert rc == 2 and named.format(**fill) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written


def test_bench_cuda_without_gpu_names_the_option(tmp_path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    out = tmp_path / "b.json"
    assert main(["bench", "--images", str(tmp_path), "--device", "cuda", "--out", str(out)]) == 2
    assert "--device cuda: no usable CUDA GPU on this machine" in _one_line_error(capsys, "mpm bench")
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder_is_refused(tmp_path, capsys) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["synth", "--root", str(folder / "set")]) == 2
    finally:
        folder.chmod(0o700)
    assert f"no write permission in {folder}" in _one_line_error(capsys, "mpm synth")


def test_ctrl_c_in_start_up_and_in_a_command_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import mpm.cli
    import mpm.data.synthetic

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # while the command modules are imported
        m.setattr(mpm.cli.importlib, "import_module", interrupt)
        assert main(["synth", "--root", str(tmp_path / "a")]) == 130
    assert capsys.readouterr().err == "mpm: interrupted\n"
    monkeypatch.setattr(mpm.data.synthetic, "generate", interrupt)
    assert main(["synth", "--root", str(tmp_path / "b")]) == 130
    assert capsys.readouterr().err == "mpm synth: interrupted\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("delay", [0.0, 0.5, 2.0])
def test_real_sigint_at_any_moment_is_one_line_and_leaves_no_output(tmp_path, delay) -> None:
    """SIGINT to a real `mpm synth` process once mpm's code runs (the interpreter's own start-up, before it,
    is Python's), whenever it lands: one line, status 130, no temporary file left (or, when the command was
    done first, status 0 and the whole set)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    root = tmp_path / "set"
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "mpm.cli", "synth", "--root", str(root),
                             "--n-train", "200", "--n-val", "4", "--size", "64"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err_lines = []
    for line in proc.stderr:  # until the command runner has started (it imports mpm.cli._args)
        err_lines.append(line)
        if line.rstrip().endswith("mpm.cli._args"):
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=300)
    err = "".join(ln for ln in err_lines + rest.splitlines(keepends=True) if not ln.startswith("import time:"))
    assert "Traceback" not in err, err
    if proc.returncode == 0:  # finished before the signal
        assert "synthetic set: 200 train + 4 val images" in out
        return
    assert proc.returncode == 130 and err in ("mpm: interrupted\n", "mpm synth: interrupted\n"), err
    leftovers = [p for p in root.rglob(".*") if p.is_file()] if root.exists() else []
    assert leftovers == []  # no temporary file of an atomic write stays behind
