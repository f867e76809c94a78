"""The docs cannot rot: every documented command composes and every linked file exists."""

import re
import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from autoencoders.config import REPO_ROOT, check_settings

from .conftest import compose_config

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python ((?:src|benchmarks)/\w+\.py)([^`\n]*)")
CONFIGS = {"src/train.py": "train", "src/eval.py": "eval", "src/predict.py": "predict"}


def documented_commands() -> list[tuple[str, str, str]]:
    """(page, script, arguments) of every `python src/...` or `python benchmarks/...` line,
    each command once (under the first page that shows it)."""
    found = {}
    for page in PAGES:
        for script, arguments in COMMAND.findall(page.read_text()):
            arguments = arguments.split("  #")[0].strip()  # a trailing comment
            found.setdefault((script, arguments), page.name)
    return [(page, script, arguments) for (script, arguments), page in found.items()]


def one_run(arguments: str) -> list[str]:
    """The overrides of one run of a command: placeholders (`<ckpt>`, `<date>`) filled in,
    flags dropped, each sweep at its first value."""
    arguments = re.sub(r"<[\w ]+>", "placeholder", arguments)
    words = [w for w in shlex.split(arguments) if not w.startswith("-")]
    overrides = OverridesParser.create().parse_overrides(words)
    return [
        f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
        if o.is_sweep_override()
        else o.input_line
        for o in overrides
    ]


def test_the_docs_document_commands():
    scripts = {script for _, script, _ in documented_commands()}
    assert {"src/train.py", "src/eval.py", "src/report.py"} <= scripts


@pytest.mark.parametrize(("page", "script", "arguments"), documented_commands())
def test_every_documented_command_composes(page, script, arguments, mnist_dir, tmp_path):
    assert (REPO_ROOT / script).is_file(), f"{page}: {script} does not exist"
    if script not in CONFIGS:
        return
    overrides = one_run(arguments)
    if script != "src/train.py" and not any(o.startswith("ckpt_path=") for o in overrides):
        pytest.fail(f"{page}: {script} needs ckpt_path: {arguments}")
    cfg = compose_config(CONFIGS[script], [*overrides, f"paths.output_dir={tmp_path}"])
    if script == "src/train.py":
        check_settings(cfg)  # values in range, as the script would check them


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_linked_file_exists(page):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
