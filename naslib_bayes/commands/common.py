"""Argument conventions shared by every subcommand.

``--dataset`` names the data the search sees; ``--seed S`` is one seed; ``--seeds`` is a count
N (seeds 0..N-1) or a list ``0,3,7``; ``--out`` is always a directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from naslib_bayes import results
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import EXPONENT_FLOAT, MAX_SEED

logger = logging.getLogger("naslib_bayes")


def parse_seeds(text: str) -> list[int]:
    """``"5"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"`` -> [0, 3, 7]."""
    try:
        if "," in text:
            seeds = [int(tok) for tok in text.split(",") if tok.strip()]
        else:
            count = int(text)
            if count < 1:  # a count, not seed 0: "from 0 to ..." would not tell what is wrong
                raise argparse.ArgumentTypeError(f"--seeds {text}: a count of seeds is at least 1 (or give seeds "
                                                 "as a comma-separated list, e.g. 0,)")
            seeds = list(range(count)) if count <= MAX_SEED + 1 else [MAX_SEED + 1]  # the last one, refused below
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count or a comma-separated list, got {text!r}") from None
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct seeds from 0 to {MAX_SEED}, got {text!r}")
    return seeds


def _int_at_least(minimum: int, what: str):
    """An argparse type for integers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "positive")
non_negative_int = _int_at_least(0, "non-negative")


def _float_above(minimum: float, inclusive: bool, what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = value >= minimum if inclusive else value > minimum
        if not ok or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a {what} number, got {text!r}")
        return value

    return parse


positive_float = _float_above(0.0, inclusive=False, what="positive")
non_negative_float = _float_above(0.0, inclusive=True, what="non-negative")


def unit_interval(with_0: bool, with_1: bool, what: str = "number"):
    """An argparse type for numbers between 0 and 1, each end included or not (``[0, 1)``: 0 only)."""
    interval = f"{'[' if with_0 else '('}0, 1{']' if with_1 else ')'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not ((0 <= value if with_0 else 0 < value) and (value <= 1 if with_1 else value < 1)):
            raise argparse.ArgumentTypeError(f"expected a {what} in {interval}, got {text!r}")
        return value

    return parse


class _ValueLoader(yaml.SafeLoader):
    """YAML as PyYAML reads it, except that ``1e-3`` is a number: PyYAML follows YAML 1.1, whose
    floats need a dot, and would hand a learning rate written the usual way on as text (the same
    pattern lets a hyper-parameter read from a NASLib config file as text be a float)."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(rf"^{EXPONENT_FLOAT.pattern}$"), list("-+0123456789"))


class _OptionLoader(_ValueLoader):
    """:class:`_ValueLoader` whose only booleans are true and false (as in YAML 1.2): YAML 1.1 also
    reads off, on, yes and no as booleans, which turned ``--opt dataset_encoder=off`` (the value
    of the flag ``--dataset-encoder off``) into False."""


_OptionLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _ValueLoader.yaml_implicit_resolvers.items()}
_OptionLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def key_value(text: str) -> tuple[str, Any]:
    """``--opt k=5`` -> ("k", 5); the value is read as YAML (numbers, true/false, lists).

    Hyphens in the key's name become underscores (``initial-design`` = ``initial_design``), but not
    in an ``OPTIMIZER.`` prefix: ``gp-bo.finetune-steps`` -> ``gp-bo.finetune_steps``.
    """
    return _key_value(text, _OptionLoader)


def naslib_key_value(text: str) -> tuple[str, Any]:
    """``--set search.k=5`` -> ("search.k", 5): as :func:`key_value`, but with YAML 1.1's booleans
    (yes/no/on/off too), as NASLib reads its config files."""
    return _key_value(text, _ValueLoader)


def _key_value(text: str, loader: type[yaml.SafeLoader]) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")  # argparse names the option
    prefix, dot, name = key.rpartition(".")
    try:
        return prefix + dot + name.replace("-", "_"), yaml.load(value, Loader=loader)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key}: cannot parse value {value!r}") from None


def seed_int(text: str) -> int:
    """An argparse type: a seed from 0 to :data:`MAX_SEED`."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {text!r}")
    return value


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")


def out_folder(text: str) -> Path:
    """An argparse type for ``--out``: blank text is refused, as ``Path("")`` is the working folder
    (an unset variable in ``--out "$RUN_DIR"`` would write the results wherever the command ran)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder, got {text!r}")
    return Path(text)


def add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=out_folder, required=True, help="output directory (created if missing)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in DIR: its result.json and, once this run's result is "
                             "written, the files other commands left there (checkpoint.pt, model.pt, widths.json, "
                             "surrogate.pt, naslib-run's search/, eval/ and errors.json), but for one this run reads")


def torch_device(text: str) -> str:
    """An argparse type: a torch device this machine has (checked now, not after the output folder is made)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine's torch sees {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available to this machine's torch")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: naslib-bayes runs on cpu, cuda or mps")
    return text


def add_device(parser, default: str | None = "cpu", threads: int | None = 1) -> None:
    """``--device`` and ``--threads`` of the commands that train networks (None defaults: the
    command fills them in, after telling a given value from an absent one)."""
    parser.add_argument("--device", type=torch_device, default=default, help="torch device (default cpu)")
    add_threads(parser, threads)


def add_threads(parser, default: int | None = 1) -> None:
    """``--threads``: torch's CPU threads. The count changes the order of float reductions, so a
    command's numbers repeat bit for bit only at one count: 1 unless the user says otherwise."""
    parser.add_argument("--threads", type=positive_int, default=default,
                        help="CPU threads for torch (default 1: small networks are bound by per-op overhead, and one "
                             "thread avoids OpenMP spin-waiting on a shared machine)")


def architecture_text(architecture) -> str:
    """A result's ``final_architecture`` as printed: an NB201 string as it is, a DARTS genotype as
    the JSON ``train --arch`` reads."""
    return architecture if isinstance(architecture, str) else json.dumps(architecture)


def step_bar(description: str):
    """A tqdm bar over training steps and a ``progress(epoch, step, steps)`` callback driving it."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit="step", disable=None)

    def progress(epoch: int, step: int, steps: int) -> None:
        bar.total = steps
        bar.set_postfix_str(f"epoch {epoch}")
        bar.n = step
        bar.refresh()

    return bar, progress


def prepare_out(out: Path, overwrite: bool, held: contextlib.ExitStack) -> Path:
    """Create ``out`` and hold it for this process until ``held`` closes (another process given
    it meanwhile stops in one line); refuse to replace a result already written there unless asked,
    or, for a command that writes no checkpoint, another command's unfinished run: its ``--resume``
    would later replace this command's result with its own (the command calls
    :func:`write_final_result` once its result is written)."""
    _hold_out(out, overwrite, held)
    from naslib_bayes.training.checkpoint import CHECKPOINT_FILE

    checkpoint = out / CHECKPOINT_FILE
    if checkpoint.exists() and not overwrite:
        raise UserError(f"{checkpoint} holds an unfinished run of another command; continue it with that "
                        "command's --resume, choose another --out or pass --overwrite")
    return out


def write_final_result(out: Path, result: dict[str, Any], *, writes_checkpoints: bool) -> Path:
    """Write ``result`` as ``out``'s result.json, then retire what other runs left there: the files
    of other commands (:func:`retire_other_commands_files`) and, for a command that
    ``writes_checkpoints`` not, another command's checkpoint (see :func:`prepare_out`), whose
    ``--resume`` would replace this result. Returns the file written."""
    from naslib_bayes.training.checkpoint import CHECKPOINT_FILE

    path = results.write_result(out, result)
    if not writes_checkpoints:
        Path(out, CHECKPOINT_FILE).unlink(missing_ok=True)
    retire_other_commands_files(out)
    return path


def retire_other_commands_files(out: Path) -> None:
    """Delete the files that commands other than the one of ``out``'s result.json leave there
    (compress's network, meta-train's surrogate, naslib-run's NASLib Trainer output): an
    ``--overwrite`` by another command left them beside its result, which does not describe them,
    and a reader took them for this run's.

    Nothing goes before this run's result.json is written (without it, nothing does); a file
    goes only when it is of our own format (a user's own ``model.pt`` stays), and not when the
    new result names it (a tnas search's ``--surrogate`` read from this folder).
    """
    result = results.read_json_record(Path(out) / results.RESULT_FILE)
    if result is None:
        return
    named = set(_strings_in(result))
    for command, retire in _RETIRE_FILES_OF_COMMAND.items():
        if command != result.get("command"):
            retire(Path(out), lambda path: _is_named(path, named))


def _strings_in(record: Any):
    """Every string in a JSON ``record``, at any depth."""
    if isinstance(record, dict):
        record = list(record.values())
    if isinstance(record, list):
        for item in record:
            yield from _strings_in(item)
    elif isinstance(record, str):
        yield record


def _is_named(path: Path, strings: set[str]) -> bool:
    """Whether one of ``strings`` is a path to the file ``path``."""
    return any(Path(text).name == path.name and Path(text).resolve() == path.resolve() for text in strings)


def _retire_compressed_network(out: Path, named) -> None:
    """compress's ``model.pt`` and ``widths.json``, when the description is a compressed network's."""
    from naslib_bayes.compression.io import WEIGHTS_FILE, WIDTHS_FILE, read_description

    try:
        read_description(out / WIDTHS_FILE)
    except UserError:  # absent, or not ours: the weights beside it are not known to be ours either
        return
    for path in (out / WEIGHTS_FILE, out / WIDTHS_FILE):  # the description last: it tells the pair ours
        if not named(path):
            path.unlink(missing_ok=True)


def _retire_surrogate(out: Path, named) -> None:
    """meta-train's ``surrogate.pt``, when it is a TNAS surrogate file (another file is the user's own)."""
    from naslib_bayes.predictors import surrogate_io

    path = out / surrogate_io.FILE_NAME
    if path.is_file() and not named(path) and surrogate_io.is_surrogate_file(path):
        path.unlink()


#: The files NASLib's Trainer writes into naslib-run's ``search`` and ``eval`` folders (its
#: checkpointer's periodic and final models and its pointer to the last one).
_NASLIB_CHECKPOINTER_FILE = re.compile(r"model_(?:\d+|final)\.pth|last_checkpoint")


def _retire_naslib_trainer_files(out: Path, named) -> None:
    """naslib-run's NASLib Trainer output: ``errors.json`` when it is NASLib's [config, curves]
    pair, and the ``search`` and ``eval`` folders when they hold its checkpointer's files only
    (a folder holding a file of the user's stays whole)."""
    errors = out / "errors.json"
    if errors.is_file() and not named(errors) and _is_naslib_errors_file(errors):
        errors.unlink()
    for folder in (out / "search", out / "eval"):
        files = list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else None
        if files is None or any(not f.is_file() or named(f) or not _NASLIB_CHECKPOINTER_FILE.fullmatch(f.name)
                                for f in files):
            continue
        for file in files:
            file.unlink()
        folder.rmdir()


def _is_naslib_errors_file(path: Path) -> bool:
    """Whether ``path`` holds what NASLib's Trainer writes there: its config, then its curves."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(record, list) and len(record) == 2 and all(isinstance(part, dict) for part in record)
            and {"optimizer", "search_space"} <= set(record[0]))


#: What commands leave in --out besides result.json and checkpoint.pt, by result.json's "command".
#: Each is given ``out`` and a test of whether the new result names a file (which then stays).
_RETIRE_FILES_OF_COMMAND = {"compress": _retire_compressed_network, "meta-train": _retire_surrogate,
                            "naslib-run": _retire_naslib_trainer_files}


def _hold_out(out: Path, overwrite: bool, held: contextlib.ExitStack) -> Path:
    """``out`` made and held, a result already there refused unless ``overwrite``, a killed write's temporaries gone."""
    held.enter_context(results.exclusive_use(out, "--out"))  # makes it; a file in the way is refused there
    if (out / results.RESULT_FILE).exists() and not overwrite:
        raise UserError(f"{out / results.RESULT_FILE} already exists; choose another --out or pass --overwrite")
    results.remove_killed_writes(out)  # a killed run's half-written checkpoint, say
    return out


def prepare_resumable_out(out: Path, overwrite: bool, resume: bool, held: contextlib.ExitStack) -> Path:
    """``--out`` of a command that checkpoints: ``--resume`` needs the checkpoint there, and a fresh
    start refuses to replace an unfinished run's checkpoint unless ``--overwrite`` says so.

    Nothing is deleted here: the old checkpoint stays until the new run's first checkpoint
    replaces it (an atomic rename), so a fresh start that fails on its input (a mistyped
    ``--data-root``) leaves the unfinished run resumable. Resuming checks the run's settings, so
    the old state is never continued under other ones.
    """
    from naslib_bayes.training.checkpoint import CHECKPOINT_FILE

    checkpoint = out / CHECKPOINT_FILE
    if resume and not checkpoint.exists() and not out.is_dir():
        raise UserError(f"--resume: no {CHECKPOINT_FILE} in {out}")  # and no folder made for nothing
    # Held first: a run still before its first checkpoint has none yet, and its process is the answer.
    out = _hold_out(out, overwrite or resume, held)
    if resume and not checkpoint.exists():
        raise UserError(f"--resume: no {CHECKPOINT_FILE} in {out}")
    if not resume and checkpoint.exists() and not overwrite:
        raise UserError(f"{checkpoint} holds an unfinished run: continue it with --resume "
                        "or start over with --overwrite")
    return out


def refuse_meta_training_beside_a_surrogate(hyperparameters: dict[str, Any], opt_prefix: str = "") -> None:
    """TNAS settings that decide only the surrogate meta-trained at setup, given beside a surrogate
    file (``surrogate``), which has already fixed them: they would be ignored, yet recorded in
    result.json's config as if used. (``feature_extractor`` stays allowed: it names the extractor
    a file's ``module:factory`` is trusted as.) ``opt_prefix``: how ``--opt`` names them (``tnas.``)."""
    if hyperparameters.get("surrogate") is None:
        return
    for key in hyperparameters:
        if key in ("dataset_encoder", "encoder_hidden") or key.startswith("meta_"):
            raise UserError(f"--opt {opt_prefix}{key} applies when meta-training here; "
                            "a surrogate file already has one")


def check_image_options(encoder: str, image_root, feature_extractor) -> None:
    """``--image-root`` and ``--feature-extractor`` serve the ``images`` dataset encoder only.

    It needs the root; any other encoder would ignore both (and record the extractor as if used).
    """
    if encoder == "images":
        if image_root is None:
            raise UserError("--dataset-encoder images needs --image-root")
        return
    for flag, value in (("--image-root", image_root), ("--feature-extractor", feature_extractor)):
        if value is not None:
            raise UserError(f"{flag} applies with --dataset-encoder images, not {encoder}")


def warn(message: str) -> None:
    logger.warning(message)
