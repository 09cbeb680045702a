"""The documentation works: every command of a block marked ``<!-- runnable -->`` in README.md and
docs/*.md is checked against the code (src/ commands compose their config with the same overrides,
so a renamed key or group fails; other scripts exist, compile and declare the options used; shell
scripts parse), and every relative link and image resolves."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = re.compile(r"<!-- runnable -->\s*```(?:bash|sh)\n(.*?)```", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# The config each entry script composes (its @hydra.main config_name).
SCRIPT_CONFIGS = {"train": "train", "eval": "eval", "verify": "verify", "index": "index", "search": "search",
                  "export": "export", "app": "app", "wise": "wise", "serve": "serve"}


def runnable_commands() -> list[tuple[str, str]]:
    """(where, command) of every command in the marked blocks: continuation lines joined, ``&&`` split,
    shell variables (``CKPT=...``) substituted."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in RUNNABLE.finditer(text):
            line_no = text[: block.start()].count("\n") + 2
            variables: dict[str, str] = {}
            for command in block.group(1).replace("\\\n", " ").splitlines():
                words = shlex.split(command, comments=True)
                if not words:
                    continue
                for part in " ".join(shlex.quote(w) for w in words).split(" && "):
                    part = re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), part)
                    assignment = re.fullmatch(r"(\w+)=(\S+)", part)
                    if assignment:
                        variables[assignment.group(1)] = assignment.group(2)
                    else:
                        found.append((f"{doc.relative_to(ROOT)}:{line_no}", part))
    return found


COMMANDS = runnable_commands()


def test_the_docs_mark_their_command_blocks_runnable():
    scripts = {shlex.split(command)[1] for _, command in COMMANDS if command.startswith("python ")}
    assert {"src/train.py", "src/eval.py", "src/verify.py", "src/index.py", "src/search.py", "src/export.py",
            "src/summarize.py", "benchmarks/loop.py", "scripts/convert_efficientnet_lite.py"} <= scripts


def first_job(overrides: list[str]) -> list[str]:
    """A sweep's overrides as its first job gets them (``margin=0.5,1.0`` -> ``margin=0.5``)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line if not o.is_sweep_override() else f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
            for o in parsed]


@pytest.mark.parametrize("where, command", [c for c in COMMANDS if re.match(r"python src/(\w+)\.py", c[1])
                                            and re.match(r"python src/(\w+)\.py", c[1]).group(1) in SCRIPT_CONFIGS])
def test_each_src_command_composes_its_config(where, command):
    words = shlex.split(command)
    name = Path(words[1]).stem
    overrides = [re.sub(r"<(\w+)>", r"\1", w) for w in words[2:] if w != "-m"]  # <run> stands for a folder name
    cfg = compose_config(SCRIPT_CONFIGS[name], first_job(overrides))
    assert cfg is not None, f"{where}: {command}"


def other_scripts() -> dict[str, set[str]]:
    """Each python script of benchmarks/, scripts/ and src/ (not a Hydra entry) the docs run, with the options they give it."""
    scripts: dict[str, set[str]] = {}
    for _, command in COMMANDS:
        words = shlex.split(command)
        if words[0] == "python" and not (words[1].startswith("src/") and Path(words[1]).stem in SCRIPT_CONFIGS) \
                and words[1] != "-m":
            scripts.setdefault(words[1], set()).update(w.split("=")[0] for w in words[2:] if w.startswith("--"))
    return scripts


@pytest.mark.parametrize("script, options", sorted(other_scripts().items()))
def test_each_other_script_takes_the_options_the_docs_give(script, options):
    source = (ROOT / script).read_text()  # read, not run: --help would import torch, seconds a script
    compile(source, script, "exec")
    declared = set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source))
    assert "argparse" in source and options - declared == set()


@pytest.mark.parametrize("script", sorted({shlex.split(c)[1] for _, c in COMMANDS if c.startswith("bash ")}))
def test_each_shell_script_exists_and_parses(script):
    assert subprocess.run(["bash", "-n", script], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_relative_link_and_image_resolves(doc):
    missing = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor of the same page
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert missing == []
