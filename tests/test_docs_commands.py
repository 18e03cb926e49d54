"""README.md and docs/ stay true: every command they show parses, and the quickstart runs as written."""

import re
import shlex
from pathlib import Path

import pytest
import torch

from inceptionv4.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.DOTALL | re.MULTILINE)


def cli_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every ``inceptionv4 ...`` or ``torchrun ... -m inceptionv4 ...`` line in a
    bash block, continuation lines joined and comments dropped; ``...`` placeholders are skipped."""
    found = []
    for page in PAGES:
        for block in code_blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if "inceptionv4" not in words or "..." in words:
                    continue
                at = words.index("inceptionv4")
                if at > 0 and words[at - 1] != "-m":  # a word inside another command's arguments
                    continue
                argv = words[at + 1 :]
                ends = [i for i, w in enumerate(argv) if w in (">", ">>", "|", "<", "2>", "&&", ";")]
                found.append((page.name, argv[: ends[0]] if ends else argv))  # the shell's part dropped
    return found


COMMANDS = cli_commands()


def test_the_pages_show_every_command():
    shown = {argv[0] for _, argv in COMMANDS}
    assert shown >= {"convert", "eval", "train", "predict", "serve", "export", "bench", "info"}


@pytest.mark.parametrize(("page", "argv"), COMMANDS, ids=[f"{p}:{' '.join(a)[:60]}" for p, a in COMMANDS])
def test_every_command_shown_parses(page, argv):
    """A flag renamed or removed fails here, not in a user's terminal."""
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{page}: `inceptionv4 {' '.join(argv)}` does not parse (exit {exit_.code})")


def test_the_readme_quickstart_runs_as_written(capsys, demo_environment):
    """The first Python block of README.md, executed where only what `make demo` installs can be
    imported; the values its comments promise, checked."""
    quickstart = code_blocks(ROOT / "README.md", "python")[0]
    assert quickstart.lstrip().startswith("import torch")
    scope: dict = {}
    with torch.no_grad():
        exec(compile(quickstart, "README.md quickstart", "exec"), scope)  # noqa: S102 - our own README
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['inception_resnet_v1', 'inception_resnet_v2', 'inception_resnet_v2_paper', 'inception_v4']"
    assert printed[1] == "(0.5, 0.5, 0.5) 0.875"
    assert printed[2] == "[64, 192, 320, 1088, 1536]"
    assert tuple(scope["logits"].shape) == (2, 10)
    assert tuple(scope["feats"].shape) == (1, 1536, 8, 8)
    assert tuple(scope["pooled"].shape) == (1, 1536)
    assert len(scope["maps"]) == 3 and scope["model"].num_classes == 5


PYTHON_PAGES = [page for page in PAGES if code_blocks(page, "python")]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[p.name for p in PYTHON_PAGES])
def test_every_library_call_the_pages_show_matches_its_signature(page):
    """Most Python blocks name a hub checkpoint, a photo or a dataset, so they are not run here:
    each call of a library function in them is bound to its real signature instead (train's
    keywords to TrainConfig's fields), so a renamed or removed argument fails here rather than in a
    user's session. A page's blocks share their imports, as a reader's session would."""
    import ast
    import dataclasses
    import inspect

    from inceptionv4.train.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    scope: dict = {}
    exec("import inceptionv4", scope)  # noqa: S102
    checked = []
    for block in code_blocks(page, "python"):
        tree = ast.parse(block)
        for node in ast.walk(tree):  # the block's own imports, nothing else of it
            if isinstance(node, ast.ImportFrom | ast.Import):
                exec(compile(ast.Module([node], []), page.name, "exec"), scope)  # noqa: S102
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            try:
                func = eval(compile(ast.Expression(node.func), page.name, "eval"), scope)
            except (NameError, AttributeError):
                continue  # a call on a value the block made (server.url, ...), not a library function
            if not callable(func) or not getattr(func, "__module__", "").startswith("inceptionv4"):
                continue
            names = [k.arg for k in node.keywords if k.arg is not None]
            inspect.signature(func).bind(*[None] * len(node.args), **dict.fromkeys(names))
            if func.__name__ == "train":
                assert set(names) <= fields, f"train() in {page.name} takes no {set(names) - fields}"
            checked.append(func.__name__)
    assert checked, f"no library call found in {page.name}'s Python blocks"
    if page.name == "README.md":
        assert {"create_model", "save_weights", "load_weights", "train", "predict", "InferenceServer",
                "export_model", "open_session", "quantize"} <= set(checked)  # fmt: skip
