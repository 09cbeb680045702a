"""The benchmark scripts still run against the current batch layout (their figures are not checked)."""

import re

from conftest import run_script


def test_training_loop_benchmark_prints_its_table():
    result = run_script("benchmarks/loop.py", "--steps", "3", "--warmup", "1", "--repeats", "1",
                        "--image-size", "32", "--batch-size", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    row = re.search(r"^\| mobilenet_v2 \| 32 \| 4 \| 32-true \| true \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", result.stdout, re.M)
    assert row, result.stdout
    assert all(float(value) > 0 for value in row.groups())
