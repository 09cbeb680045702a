"""What a run leaves in its folder and log: a line per epoch, failed.json, one-line errors."""

import json

from helpers import run_script, tiny_overrides


def test_a_redirected_run_logs_one_line_per_epoch_and_no_startup_noise(tiny_flowers, tmp_path):
    # progress bar as configured by default: it shows only on a terminal, and this is none
    overrides = [o for o in tiny_overrides(tiny_flowers) if "enable_progress_bar" not in o]
    result = run_script("src/train.py", *overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "train.log").read_text()
    epochs = [line.split(" - ", 1)[1] for line in log.splitlines() if "epoch_log" in line]
    assert [line.split(":")[0] for line in epochs] == ["epoch 0", "epoch 1"]
    assert not any("COLLAPSED" in line for line in epochs) and "collapsed" not in log  # a healthy run
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    if metrics["best_epoch"] == 1:  # the last epoch's line carries the best checkpoint's validation numbers
        assert f"val_auroc {metrics['val_auroc']:.4f}" in epochs[1]
    assert "litlogger" not in log and "was configured so 100%" not in log
    table = log.split("final metrics (best checkpoint)\n", 1)[1]
    assert f"test_auroc {metrics['test_auroc']:.4f}" in " ".join(table.split())  # the final table too
    for output in (result.stdout, result.stderr):  # no progress-bar frames in a redirected output
        assert "\r" not in output and "\x1b[" not in output and "it/s]" not in output


def test_a_misspelt_trainer_key_is_one_line_and_the_run_folder_says_why(tiny_flowers, tmp_path):
    result = run_script("src/train.py", *tiny_overrides(tiny_flowers), "+trainer.max_epoch=1", f"hydra.run.dir={tmp_path}")
    message = "unknown trainer argument trainer.max_epoch; did you mean trainer.max_epochs?"
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert json.loads((tmp_path / "failed.json").read_text()) == {"error": message}
    assert (tmp_path / "train.log").read_text().strip().splitlines()[-1].endswith(f"run failed: {message}")
