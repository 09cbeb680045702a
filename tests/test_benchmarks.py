"""The benchmark scripts still run against the current batch layout (their figures are not checked)."""

import re

import pytest
from helpers import run_script


def test_training_loop_benchmark_prints_its_table():
    result = run_script("benchmarks/loop.py", "--steps", "3", "--warmup", "1", "--repeats", "1",
                        "--image-size", "32", "--batch-size", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    row = re.search(r"^\| mobilenet_v2 \| 32 \| 4 \| 32-true \| true \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", result.stdout, re.M)
    assert row, result.stdout
    assert all(float(value) > 0 for value in row.groups())


def test_the_trials_table_ranks_a_search_by_validation_and_shows_what_each_trial_tried(tmp_path):
    import json

    import yaml

    for number, (margin, val, test) in enumerate([(1.5, 0.80, 0.70), (1.0, 0.90, 0.60)]):
        job = tmp_path / f"2026-11-29_10-00-0{number}_{number}_margin={margin}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"margin={margin}", "seed=1"]))
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"params": {"margin": "interval(1.0, 2.0)"}}}}))
        (job / "metrics.json").write_text(json.dumps({"val_auroc": val, "test_auroc": test, "test_acc": 0.5, "best_epoch": 2}))
    result = run_script("benchmarks/tables.py", "trials", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.match(r"^\| \d", line)]
    assert rows == ["| 1 | 0.9000 | 0.6000 | 0.5000 | 2 | 1 |", "| 0 | 0.8000 | 0.7000 | 0.5000 | 2 | 1.500 |"]
    assert "| trial | val ROC-AUC | test ROC-AUC | test acc | best epoch | margin |" in result.stdout


def _two_seed_sweep(sweep, split="stratified", **metrics):
    """A finished sweep of two seeds on ``split``: test_auroc 0.90 and 0.80, and ``metrics`` in both."""
    import json

    import yaml

    for seed, auroc in [(1, 0.90), (2, 0.80)]:
        job = sweep / f"{seed - 1}_seed={seed}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
        (job / "config_resolved.yaml").write_text(yaml.safe_dump({"data": {"split": split}}))
        (job / "metrics.json").write_text(json.dumps({"test_auroc": auroc, **metrics}))
    return sweep


def test_the_results_table_shows_the_gallery_classes_once_and_refuses_a_wrong_argument(tmp_path):
    _two_seed_sweep(tmp_path, split="unseen_classes", test_gallery_classes=20.0)
    result = run_script("benchmarks/tables.py", "seeds", f"mine={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("| recipe"))
    row = next(line for line in result.stdout.splitlines() if line.startswith("| mine |"))
    cells = dict(zip(header.strip("|").split(" | "), row.strip("|").split(" | ")))
    assert cells["test ROC-AUC"].strip() == "0.850 ± 0.071" and cells["classes"].strip() == "20"
    for wrong in ["mine", f"mine={tmp_path / 'missing'}"]:
        refused = run_script("benchmarks/tables.py", "seeds", wrong)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines()[-1].endswith(
            f"{wrong}: pass LABEL=SWEEP_DIR (or LABEL=RUN_DIR), a folder that src/train.py wrote")



def test_the_folders_given_one_label_are_one_recipes_seeds(tmp_path):
    """A lever's seed 1 from its own run folder and seeds 2 and 3 from another: one row of three seeds."""
    import sys

    from helpers import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tables import seed_rows

    sweep = _two_seed_sweep(tmp_path / "sweep")  # test_auroc 0.90 and 0.80
    single = _two_seed_sweep(tmp_path / "other") / "0_seed=1"  # one run of it: 0.90
    other_split = _two_seed_sweep(tmp_path / "unseen", split="unseen_classes")
    rows = seed_rows([("mine", single), ("theirs", other_split), ("mine", sweep)], {"test_auroc": "test ROC-AUC"})
    assert rows == [{"recipe": "mine", "split": "stratified", "seeds": "3/3", "test ROC-AUC": "0.867 ± 0.058"},
                    {"recipe": "theirs", "split": "unseen_classes", "seeds": "2/2", "test ROC-AUC": "0.850 ± 0.071"}]


def test_the_goal_table_reads_each_measure_against_its_goal_with_every_seed(tmp_path):
    import json

    import yaml

    runs = {"stratified": [(0.990, 0.93, 0.70, 1500), (0.994, 0.94, 0.70, 1620), (0.998, 0.95, 0.70, 1800)],
            "unseen_classes": [(0.92, 0.85, 0.76, 600), (0.93, 0.86, 0.76, 660), (0.94, 0.87, 0.76, 720)]}
    for split, seeds in runs.items():
        for seed, (auroc, acc, foreign, seconds) in enumerate(seeds, start=1):
            job = tmp_path / f"{split}_{seed}"
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"data.split={split}", f"seed={seed}"]))
            (job / "config_resolved.yaml").write_text(yaml.safe_dump({"data": {"split": split}, "seed": seed}))
            (job / "metrics.json").write_text(json.dumps({"test_all_auroc": auroc, "test_acc": acc,
                                                          "foreign_auroc": foreign, "fit_seconds": seconds}))
    result = run_script("benchmarks/tables.py", "goal", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and not line.startswith("| split")]
    assert rows == [
        "| stratified | test ROC-AUC (all pairs) | 0.994 ± 0.004 | 0.99 | met (each seed: 0.9900, 0.9940, 0.9980) |",
        "| stratified | test acc (calibrated) | 0.940 ± 0.010 | 0.95 | missed by 0.010 (each seed: 0.930, 0.940, 0.950) |",
        "| unseen_classes | test ROC-AUC (all pairs) | 0.930 ± 0.010 | 0.95 | missed by 0.020 (each seed: 0.9200, 0.9300, 0.9400) |",
        "| every split | foreign ROC-AUC | 0.70–0.76 | 0.85 | missed by 0.09–0.15 (each split's mean: stratified 0.700, unseen_classes 0.760) |",
        "| every split | minutes of training | 10–30 | 30 | met: the longest, stratified seed 3, 30.0 min |",
    ]
    refused = run_script("benchmarks/tables.py", "goal", str(tmp_path / "stratified_1" / ".hydra"))
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "error: no finished runs (metrics.json, config_resolved.yaml) of the stratified, official or unseen_classes split "
        "in the folders given: pass the sweep of bash benchmarks/photos.sh results")


def test_a_result_file_that_cannot_be_written_is_one_line_and_leaves_the_old_one_as_it_was(tmp_path):
    sweep = _two_seed_sweep(tmp_path / "sweep")
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"title": "Mine", "blocks": [')
    for out, message in [(tmp_path, f"error: --out={tmp_path} is a folder; give a file name"),
                         (damaged, f"error: {damaged} is not a result file (not JSON: ")]:
        result = run_script("benchmarks/tables.py", "seeds", f"mine={sweep}", "--out", str(out))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert damaged.read_text() == '{"title": "Mine", "blocks": ['


def test_a_seeds_table_written_as_a_result_file_keeps_its_prose_and_says_where_it_came_from(tmp_path):
    import json


    sweep = _two_seed_sweep(tmp_path / "sweep")
    out = tmp_path / "01_mine.json"
    out.write_text(json.dumps({"title": "Mine", "blocks": [{"text": "What it measured."},
                                                          {"columns": ["old"], "rows": [["1"]]}]}))
    result = run_script("benchmarks/tables.py", "seeds", f"mine={sweep}", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["title"] == "Mine" and written["blocks"][0] == {"text": "What it measured."}
    table = written["blocks"][1]
    assert table["rows"][0][table["columns"].index("test ROC-AUC")] == "0.850 ± 0.071"
    assert written["command"] == f"python benchmarks/tables.py seeds mine={sweep} --out {out}"
    assert written["written_by"] == "benchmarks/tables.py" and written["date"] and written["machine"]


def test_the_generalise_table_keeps_the_rows_of_runs_trained_elsewhere_and_replaces_those_trained_again(tmp_path):
    import json

    run = tmp_path / "out" / "stratified" / "joined"
    run.mkdir(parents=True)
    metrics = {"val_all_auroc": 0.9912, "test_all_auroc": 0.9876, "foreign_auroc": 0.7654,
               "best_epoch": 7, "epochs_trained": 9, "fit_seconds": 1234.5}
    (run / "metrics.json").write_text(json.dumps(metrics))
    columns = ["split", "lever", "val ROC-AUC (all pairs)", "fit s"]  # a table from before the machine column
    earlier = [["unseen_classes", "photos", "0.931", "661"], ["unseen_classes", "photos + test_views_5", "0.930", ""],
               ["stratified", "joined", "0.500", "1"], ["stratified", "joined + join_0", "0.400", ""]]
    out = tmp_path / "11_mine.json"
    out.write_text(json.dumps({"title": "Mine", "date": "2026-12-03",
                               "machine": "Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1, 2026-12-03",
                               "blocks": [{"text": "Prose."}, {"columns": columns, "rows": earlier}]}))
    result = run_script("benchmarks/generalise.py", "table", str(tmp_path / "out"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["blocks"][0] == {"text": "Prose."}
    table = written["blocks"][1]
    rows = [dict(zip(table["columns"], cells)) for cells in table["rows"]]
    # the unseen rows are kept as they were, with the machine of the file they came from; the stratified
    # run trained again replaces its row and its evaluated option, whose folder it does not have
    assert [(r["split"], r["lever"], r["val ROC-AUC (all pairs)"], r["fit s"]) for r in rows] == [
        ("unseen_classes", "photos", "0.931", "661"), ("unseen_classes", "photos + test_views_5", "0.930", ""),
        ("stratified", "joined", "0.991", "1234")]
    assert rows[0]["machine"] == rows[1]["machine"] == "Intel(R) Xeon(R) Processor, 2026-12-03"
    assert rows[2]["test ROC-AUC (all pairs)"] == "0.988" and rows[2]["foreign ROC-AUC"] == "0.765"
    assert rows[2]["machine"].endswith(written["date"]) and rows[2]["machine"] != rows[0]["machine"]

    out.write_text('{"title": "Mine", "blocks": [')
    result = run_script("benchmarks/generalise.py", "table", str(tmp_path / "out"), "--out", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {out} is not a result file"), result.stderr


def test_docs_results_md_is_what_the_result_files_give():
    """docs/results.md and README's headline are generated: python benchmarks/tables.py docs writes them
    again after a result file changes."""
    import json
    import sys

    from helpers import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tables import RESULTS, render, with_headline

    assert (ROOT / "docs" / "results.md").read_text() == render(), "run: python benchmarks/tables.py docs"
    readme = (ROOT / "README.md").read_text()
    assert readme == with_headline(readme), "README's headline differs from the result files: python benchmarks/tables.py docs"
    files = sorted(RESULTS.glob("*.json"))
    assert len(files) >= 9
    for path in files:
        result = json.loads(path.read_text())
        assert all(result.get(key) for key in ("title", "command", "machine", "date", "commit")), path.name
        assert any("rows" in block for block in result["blocks"]), path.name


@pytest.mark.slow
def test_the_search_benchmark_measures_recall_against_exact_search(tmp_path):
    """Exact backends find every true neighbour; IVF probing all its cells is exhaustive too, and
    probing one of 16 finds fewer. With --out the table is also a result file."""
    import json

    pytest.importorskip("faiss")
    out = tmp_path / "09_search.json"
    result = run_script("benchmarks/search.py", "--sizes", "3000", "--queries", "50", "--repeats", "1",
                        "--approximate", "--nlist", "16", "--nprobe", "1", "16", "--ef", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["command"].startswith("python benchmarks/search.py --sizes 3000") and written["written_by"] == "benchmarks/search.py"
    table = written["blocks"][0]
    assert len(table["rows"]) == 5 and table["rows"][0][:2] == ["3,000", "torch exact"]
    recall = {f"{m.group(1)} {m.group(2)}".strip(): float(m.group(3)) for m in re.finditer(
        r"^\| 3,000 \| ([^|]+?) \| ([^|]*?) \|(?: [^|]+ \|){5} ([\d.]+) \|$", result.stdout, re.M)}
    assert recall["torch exact"] == recall["faiss flat (exact)"] == recall["faiss IVF16 nprobe 16"] == 1.0, recall
    assert recall["faiss IVF16 nprobe 1"] < 1.0 and 0 < recall["faiss HNSW32 efSearch 64"] <= 1.0, recall


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a GPU machine the script runs its checks")
def test_the_gpu_script_says_in_one_line_that_there_is_no_gpu_here():
    result = run_script("-c", "import subprocess, sys; sys.exit(subprocess.call(['bash', 'benchmarks/gpu.sh']))")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "no CUDA device here: nothing to run (bash benchmarks/gpu.sh on a GPU machine)\n"


@pytest.mark.slow  # about 20 s: a training run
def test_the_gpu_benchmarks_callback_times_a_run(tiny_flowers, tmp_path):
    import sys

    from helpers import ROOT, tiny_overrides

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu

    tiny = [o for o in tiny_overrides(tiny_flowers) if not o.startswith(("backbone", "trainer.accelerator"))]
    row = gpu.run("cpu", ["experiment=photos", *tiny, "backbone.pretrained=false", "backbone.weights_path=null",
                          "data.split_fractions=[0.32,0.34,0.34]", "trainer=cpu"], tmp_path)
    assert float(row["epoch s"]) > 0 and float(row["images/s"]) > 0 and 0 <= float(row["test ROC-AUC"]) <= 1


def test_every_name_the_benchmarks_and_scripts_import_from_the_package_exists():
    """A moved or renamed module breaks a benchmark at once, not when someone next runs it."""
    import ast
    import importlib

    from helpers import ROOT

    missing = []
    for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "siamese":
                try:
                    module = importlib.import_module(node.module)
                except ImportError:
                    missing.append(f"{path.name}: {node.module}")
                    continue
                missing += [f"{path.name}: {node.module}.{alias.name}" for alias in node.names
                            if not hasattr(module, alias.name) and not _is_module(f"{node.module}.{alias.name}")]
    assert missing == []


def _is_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
