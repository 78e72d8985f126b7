"""The command lines README.md and docs/*.md show are accepted by the programs they run.

Every ``naslib-bayes ...``, ``python benchmarks/<script>.py ...`` and ``python examples/<script>.py
...`` line of a fenced block (``\\`` continuations joined), and every such command in backticks in
the text (``python`` there may be left out), is parsed, never run: each of its flags must be one the
program has (spelt out, not an abbreviation argparse would accept), each value must pass the
flag's type and choices, and the names argparse leaves to the program (optimizers, datasets,
search spaces, ``--opt`` keys and values, the benchmarks' methods) must be ones it accepts. A
whole command of a fenced block must parse as it stands; fragments (in the text, with ``...``, or
a synopsis with ``[--flag X]`` and ``a|b``) are checked flag by flag. Placeholders in capitals
(PATH, DIR, E) stand for any value.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from example_loader import load_example
from naslib_bayes import cli
from naslib_bayes.commands.common import key_value
from naslib_bayes.data.loaders import canonical_name
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry
from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
SHELL_FENCES = ("", "bash", "sh", "shell", "console")
PROGRAM = re.compile(r"(?:^|&&|;)\s*(?:[A-Za-z_]+=\S*\s+)*((?:naslib-bayes|(?:python\s+)?(?:benchmarks|examples)/\w+\.py)(?:\s|$))")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
SHELL_LOOP = re.compile(r"\bfor\s+(\w+)\s+in\s+(\S+)")


@dataclass(frozen=True)
class DocCommand:
    where: str  # "docs/tnas.md:60"
    words: tuple[str, ...]  # the program's arguments, the program itself left out
    program: str  # "naslib-bayes" or "benchmarks/tnas_nb201.py"
    whole: bool  # a complete command, parsed as it stands; otherwise checked flag by flag

    def __str__(self) -> str:
        return f"{self.where}: {self.program} {shlex.join(self.words)}"


# ---- finding the command lines ----------------------------------------------------------------
def doc_commands(path: Path) -> list[DocCommand]:
    """The command lines of one Markdown file: those of its shell blocks, then those in backticks."""
    lines = path.read_text().splitlines()
    name = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    return [*_block_commands(lines, name), *_inline_commands(lines, name)]


def _block_commands(lines: list[str], name: str) -> list[DocCommand]:
    commands, fence, block = [], None, []
    for number, line in enumerate(lines, 1):
        opening = re.match(r"\s*```(\S*)", line)
        if opening and fence is None:
            fence, block = opening.group(1), []
        elif opening:
            if fence in SHELL_FENCES:
                commands += _commands_of_block(block, name)
            fence = None
        elif fence is not None:
            block.append((number, line))
    return commands


def _commands_of_block(block: list[tuple[int, str]], name: str) -> list[DocCommand]:
    loop_values = {var: first.rstrip(";") for var, first in SHELL_LOOP.findall(" ".join(line for _, line in block))}
    commands = []
    for number, text in _logical_lines(block):
        for var, value in loop_values.items():  # a loop's variable stands for its first value
            text = text.replace(f"${var}", value)
        command = _command_in(text, f"{name}:{number}", inline=False)
        if command is not None:
            commands.append(command)
    return commands


def _logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines with their continuations joined: after a ``\\``, or (a synopsis) indented options."""
    joined: list[tuple[int, str]] = []
    continued = False
    for number, line in block:
        synopsis_part = re.match(r"\s+[\[-]", line) and joined and PROGRAM.search(joined[-1][1])
        if continued or synopsis_part:
            joined[-1] = (joined[-1][0], joined[-1][1] + " " + line.strip())
        else:
            joined.append((number, line))
        continued = joined[-1][1].endswith("\\")
        if continued:
            joined[-1] = (joined[-1][0], joined[-1][1][:-1])
    return joined


def _inline_commands(lines: list[str], name: str) -> list[DocCommand]:
    """Commands in backticks outside the fenced blocks; a span may run over a line break."""
    commands, paragraph, in_fence = [], [], False
    for number, line in enumerate([*lines, ""], 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if in_fence or not line.strip() or line.lstrip().startswith("```"):
            commands += _spans_of(paragraph, name)
            paragraph = []
        else:
            paragraph.append((number, line))
    return commands


def _spans_of(paragraph: list[tuple[int, str]], name: str) -> list[DocCommand]:
    text = " ".join(line for _, line in paragraph)
    starts, offset = [], 0  # where each line begins in the joined text
    for _, line in paragraph:
        starts.append(offset)
        offset += len(line) + 1
    commands = []
    for span in re.finditer(r"`([^`]+)`", text):
        number = paragraph[sum(start <= span.start() for start in starts) - 1][0]
        command = _command_in(span.group(1), f"{name}:{number}", inline=True)
        if command is not None:
            commands.append(command)
    return commands


def _command_in(text: str, where: str, inline: bool) -> DocCommand | None:
    found = PROGRAM.search(text)
    if found is None or (inline and found.start(1) != 0):
        return None
    words = shlex.split(text[found.start(1):], comments=True)
    for end, word in enumerate(words):  # the command ends where the shell starts another
        if word in ("&&", ";", "||"):
            words = words[:end]
            break
    if words[0] == "python":
        words = words[1:]
    program, words = words[0], words[1:]
    synopsis = any(w == "..." or re.search(r"[\[\]()|]", w) for w in words)
    if synopsis:  # "[--lambda L]", "bayesnas|darts", "(NB201 string | ...)", "...": the flags and their values
        words = [w.strip("[]()") for w in words if w not in ("...", "|")]
    return DocCommand(where, tuple(w for w in words if w), program, whole=not (inline or synopsis))


ALL_COMMANDS = [command for doc in DOCS for command in doc_commands(doc)]


# ---- the programs' parsers ---------------------------------------------------------------------
def _script(program: str):
    folder, _, file = program.partition("/")
    name = file.removesuffix(".py")
    if folder == "examples":
        return load_example(name)
    if str(REPO / "benchmarks") not in sys.path:  # the scripts import each other by name
        sys.path.insert(0, str(REPO / "benchmarks"))
    return importlib.import_module(name)


@dataclass
class Parsed:
    """How a program parses one command: ``whole`` parses a complete command line as the program
    does, ``fragment`` parses some of its flags, none of them required; ``owner`` holds the flags."""

    owner: argparse.ArgumentParser
    whole: Callable[[list[str]], object]
    fragment: Callable[[list[str]], object]


def parser_of(command: DocCommand) -> Parsed:
    if command.program == "naslib-bayes":
        subcommand = command.words[0] if command.words else None
        parser = cli.build_parser()
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        assert subcommand in subcommands, f"naslib-bayes has no command {subcommand!r}"
        relaxed = cli.build_parser()
        _relax(next(a for a in relaxed._actions if isinstance(a, argparse._SubParsersAction)).choices[subcommand])
        return Parsed(subcommands[subcommand], lambda argv: parser.parse_args([subcommand, *argv]),
                      lambda argv: relaxed.parse_args([subcommand, *argv]))
    script = _script(command.program)
    assert hasattr(script, "parse_args"), f"{command.program} has no parse_args(argv) to check its lines with"
    relaxed = _parser_built_by(script.parse_args)
    _relax(relaxed)
    return Parsed(_parser_built_by(script.parse_args), script.parse_args, relaxed.parse_args)


def _relax(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:  # a fragment leaves out what the command requires
        action.required = False


class _Built(Exception):
    """Carries the parser a script's parse_args built, caught as it was about to parse."""


def _parser_built_by(parse_args) -> argparse.ArgumentParser:
    def catch(parser, args=None, namespace=None):
        raise _Built(parser)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        try:
            parse_args([])
        except _Built as built:
            return built.args[0]
    raise AssertionError(f"{parse_args.__module__}.parse_args parsed with no argparse parser")


def parsed_or_refusal(parse: Callable[[list[str]], object], argv: list[str]) -> tuple[object, str | None]:
    """What the program parses ``argv`` into, or its error (the last line it wrote)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parse(argv), None
    except SystemExit as exc:
        return None, (stderr.getvalue().strip().splitlines() or [f"exit {exc.code}"])[-1]


def _options(words: list[str], known: dict) -> list[tuple[str, str | None]]:
    """(flag, its value or None) of every flag among ``words``."""
    pairs = []
    for i, word in enumerate(words):
        if word.startswith("-") and not re.fullmatch(r"-\d.*", word):
            flag, sep, value = word.partition("=")
            takes_value = flag not in known or known[flag].nargs != 0
            if not sep and takes_value:
                following = words[i + 1] if i + 1 < len(words) else None
                value = following if following is not None and not following.startswith("-") else None
            pairs.append((flag, value or None))
    return pairs


def _is_placeholder(value: str) -> bool:
    return bool(PLACEHOLDER.fullmatch(value))


# ---- the names argparse leaves to the programs ----------------------------------------------------
def _hyperparameter_defaults(optimizer: str) -> dict:
    cls = registry.get_spec(optimizer).load()
    return {**getattr(cls, "common_defaults", {}), **cls.defaults}


def _check_hyperparameter(optimizer: str, text: str) -> None:
    """``KEY=VALUE`` names a hyper-parameter of ``optimizer`` and gives it a value the optimizer takes."""
    key, value = key_value(text)
    if _is_placeholder(key):  # KEY=VALUE
        return
    if isinstance(value, str) and _is_placeholder(value):  # surrogate=PATH: the name alone
        defaults = _hyperparameter_defaults(optimizer)
        assert key in defaults, f"{optimizer} has no hyper-parameter {key!r} (known: {', '.join(sorted(defaults))})"
    else:
        registry.create(optimizer, **{key: value})  # checks names, types, bounds and choices


def _each(check):
    return lambda value, options: [check(item) for item in value.split(",")]


def _search_opt(value: str, options: dict) -> None:
    for optimizer in options.get("--optimizer", "").split("|"):
        if optimizer:
            _check_hyperparameter(optimizer, value)


def _compare_opt(value: str, options: dict) -> None:
    optimizer, dot, setting = value.partition(".")
    assert dot, f"--opt {value}: expected OPTIMIZER.KEY=VALUE"
    if not _is_placeholder(optimizer):
        _check_hyperparameter(optimizer, setting)


def _tnas_methods(value: str, options: dict) -> None:
    known = _script("benchmarks/tnas_nb201.py").METHODS
    unknown = [m for m in value.split(",") if m.strip() not in known]
    assert not unknown, f"--methods: unknown method {unknown[0]!r}; known: {', '.join(known)}"


def _oneshot_methods(value: str, options: dict) -> None:
    _script("benchmarks/oneshot_nb201.py").one_shot_methods(value)


def _search_space(value: str, options: dict) -> None:
    from naslib_bayes.training.search import canonical_space

    canonical_space(value)


NAME_CHECKS = {
    ("naslib-bayes", "search"): {
        "--optimizer": lambda value, options: registry.get_spec(value),
        "--dataset": lambda value, options: canonical_name(value),
        "--search-space": _search_space,
        "--opt": _search_opt,
    },
    ("naslib-bayes", "train"): {"--dataset": lambda value, options: canonical_name(value)},
    ("naslib-bayes", "meta-train"): {"--datasets": _each(canonical_dataset)},
    ("naslib-bayes", "compare"): {
        "--optimizers": _each(lambda name: registry.get_spec(name, registry.BLACK_BOX)),
        "--oneshot": _each(lambda name: registry.get_spec(name, registry.ONE_SHOT)),
        "--datasets": _each(canonical_dataset),
        "--dataset": lambda value, options: canonical_name(value),
        "--opt": _compare_opt,
    },
    ("naslib-bayes", "naslib-run"): {"--search-data": lambda value, options: canonical_name(value)},
    ("benchmarks/tnas_nb201.py", None): {"--methods": _tnas_methods, "--datasets": _each(canonical_dataset)},
    ("benchmarks/tnas_nb201_validate.py", None): {"--methods": _tnas_methods},
    ("benchmarks/oneshot_nb201.py", None): {"--methods": _oneshot_methods},
    ("examples/tnas_transfer.py", None): {"--target": lambda value, options: canonical_dataset(value)},
}


def _search_combination(args) -> None:
    from naslib_bayes.commands import search

    kind = registry.get_spec(args.optimizer).kind
    search._refuse_options_of_the_other_kind(args, kind)  # e.g. --epochs for a black-box optimizer
    if kind == registry.ONE_SHOT:
        search._one_shot_hyperparameters(args)  # e.g. --lambda for darts, or a setting given twice


def _compare_combination(args) -> None:
    from naslib_bayes.commands import compare

    compare._check_mode(args)  # black-box and one-shot options mixed
    if args.optimizers:
        compare._hyperparameters(args.opt, args.optimizers)  # --opt of an optimizer not compared


COMBINATION_CHECKS = {("naslib-bayes", "search"): _search_combination, ("naslib-bayes", "compare"): _compare_combination}


def name_checks(command: DocCommand) -> dict:
    subcommand = command.words[0] if command.program == "naslib-bayes" else None
    return NAME_CHECKS.get((command.program, subcommand), {})


# ---- the checks -------------------------------------------------------------------------------
def problems(command: DocCommand) -> list[str]:
    """What a user running ``command`` would be told is wrong with it (empty: nothing)."""
    parsed = parser_of(command)
    words = list(command.words[1:] if command.program == "naslib-bayes" else command.words)
    known = parsed.owner._option_string_actions
    options = _options(words, known)
    unknown = [f"no flag {flag}" for flag, _ in options if flag not in known]
    if unknown:  # spelt out: argparse would take a prefix of a flag for the flag
        return unknown
    if command.whole:
        args, refused = parsed_or_refusal(parsed.whole, words)
        found = [refused or _combination_refusal(command, args)]
    else:
        found = [parsed_or_refusal(parsed.fragment, [flag, alternative])[1] for flag, value in options
                 for alternative in (value or "").split("|") if alternative and not _is_placeholder(alternative)]
    return [message for message in found if message] + _name_refusals(command, options)


def _combination_refusal(command: DocCommand, args) -> str | None:
    """What the command refuses in the options given together, before it reads any file."""
    check = COMBINATION_CHECKS.get((command.program, command.words[0] if command.words else None))
    try:
        if check is not None:
            check(args)
    except UserError as exc:
        return str(exc)
    return None


def _name_refusals(command: DocCommand, options) -> list[str]:
    checks, given = name_checks(command), {flag: value for flag, value in options if value}
    found = []
    for flag, value in options:
        if flag not in checks or value is None:
            continue
        for alternative in value.split("|"):
            if _is_placeholder(alternative):
                continue
            try:
                checks[flag](alternative, given)
            except Exception as exc:  # UserError, AssertionError: what the program would refuse
                found.append(f"{flag} {alternative}: {exc}")
    return found


def test_the_docs_show_command_lines_of_every_program():
    """The extraction finds the lines it is meant to check (a change of the docs' layout that hid
    them would otherwise pass every other test here vacuously)."""
    programs = {command.program for command in ALL_COMMANDS}
    assert programs >= {"naslib-bayes", "benchmarks/compress_mnist.py", "benchmarks/oneshot_nb201.py",
                        "benchmarks/tnas_nb201.py", "benchmarks/tnas_nb201_validate.py", "examples/tnas_transfer.py"}
    subcommands = {command.words[0] for command in ALL_COMMANDS if command.program == "naslib-bayes"}
    assert subcommands >= {"search", "train", "meta-train", "compress", "compare", "naslib-run", "list"}
    assert sum(command.whole for command in ALL_COMMANDS) >= 50
    continued = [c for c in ALL_COMMANDS if c.where.startswith("README.md:") and "--lam-scale" in c.words]
    assert continued and "--finetune-epochs" in continued[0].words  # the line after the "\" belongs to it


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_a_documented_command_line_is_accepted_by_its_program(command):
    assert problems(command) == []


def test_a_misspelt_flag_or_name_in_a_doc_line_is_caught(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```bash\n"
                   "naslib-bayes search --optimizer rs --benchmark PATH --dataset cifar10 --budgte 100 --out DIR\n"
                   "naslib-bayes search --optimizer re --benchmark PATH --dataset cifar10 --budget 100 "
                   "--opt populaton_size=20 --out DIR\n"
                   "naslib-bayes compare --benchmark PATH --optimizers tnas,gpbo --out DIR\n"
                   "naslib-bayes compress --model lenet5 --dataset mnist --lam-scale sqrt --out DIR\n"
                   "python benchmarks/tnas_nb201.py --benchmark PATH --methods \"tnas,tnas beta=3\"\n"
                   "naslib-bayes search --optimizer tnas ... --opt prior_beta=high\n"
                   "naslib-bayes search --optimizer rs --benchmark PATH --dataset cifar10 --budget 9 --epochs 3 --out DIR\n"
                   "```\n"
                   "The text names `naslib-bayes meta-train --output-transfrom robust` too.\n")
    found = {}
    for command in doc_commands(doc):
        found[command.where.rpartition(":")[2]] = " ".join(problems(command))
    assert "no flag --budgte" in found["2"]  # argparse would have taken it for --budget
    assert "unknown hyper-parameter 'populaton_size'" in found["3"]
    assert "unknown black-box optimizer 'gpbo'" in found["4"]
    assert "invalid choice: 'sqrt'" in found["5"]
    assert "unknown method 'tnas beta=3'" in found["6"]
    assert "prior_beta='high': expected a number" in found["7"]
    assert "--epochs applies to one-shot search, not to --optimizer rs" in found["8"]
    assert "no flag --output-transfrom" in found["10"]


PYTHON_API_SECTION = "## Examples: the Python API"


def readme_python_blocks(in_python_api_section: bool) -> list[str]:
    """The README's python blocks inside its Python API section, or those outside it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(PYTHON_API_SECTION)
    end = text.index("\n## ", start + len(PYTHON_API_SECTION))
    parts = [text[start:end]] if in_python_api_section else [text[:start], text[end:]]
    return [block for part in parts for block in re.findall(r"```python\n(.*?)```", part, flags=re.S)]


def test_the_readme_python_block_names_what_the_package_defines():
    """Its names are imported from the package (the block itself needs NASLib and a config)."""
    blocks = readme_python_blocks(in_python_api_section=False)
    assert blocks
    imported = [(node.module, alias.name) for block in blocks for node in ast.walk(ast.parse(block))
                if isinstance(node, ast.ImportFrom) for alias in node.names]
    assert imported
    for module, name in imported:
        assert name in _top_level_names(module), f"README's python block: {module} defines no {name}"


def _top_level_names(module: str) -> set[str]:
    """Names a module defines at its top level, read from its source (importing it may need NASLib)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"no module {module}"
    tree = ast.parse(Path(spec.origin).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def imported_names(tree: ast.Module) -> dict[str, object]:
    """What each ``from MODULE import NAME`` of the code binds, imported for real."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                names[alias.asname or alias.name] = member(module, alias.name)
    return names


def member(module, name: str):
    """``from module import name``: an attribute of the module, else its submodule ``name``."""
    if not hasattr(module, name):
        try:
            return importlib.import_module(f"{module.__name__}.{name}")
        except ModuleNotFoundError:
            pytest.fail(f"README: {module.__name__} has no {name}")
    return getattr(module, name)


def called(func: ast.expr, names: dict[str, object]):
    """The object a call's ``NAME(...)`` or ``NAME.attr(...)`` reaches through the imports, else None."""
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in names:
        owner = names[func.value.id]
        assert hasattr(owner, func.attr), f"README: {func.value.id} has no {func.attr}"
        return getattr(owner, func.attr)
    return None


def test_the_python_api_section_imports_names_that_exist_and_calls_them_as_they_take():
    """A researcher copies imports from this section: each must exist where it says, and each call of
    the package must take the arguments shown (their count and keyword names), so that a renamed
    module or argument fails here rather than in a user's script."""
    blocks = readme_python_blocks(in_python_api_section=True)
    assert blocks, f"no python block in README's {PYTHON_API_SECTION!r}"
    tree = ast.parse("\n".join(blocks))
    names = imported_names(tree)
    calls = [(node, called(node.func, names)) for node in ast.walk(tree) if isinstance(node, ast.Call)]
    checked = [(node, target) for node, target in calls if target is not None]
    assert len(checked) >= 8  # the section's calls of the package, not a block that lost them
    for node, target in checked:
        keywords = {kw.arg: None for kw in node.keywords}
        try:
            inspect.signature(target).bind(*[None] * len(node.args), **keywords)
        except TypeError as exc:
            pytest.fail(f"README line {node.lineno} of its python block: {ast.unparse(node.func)}: {exc}")
