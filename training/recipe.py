"""Training recipes: a YAML file plus ``key=value`` overrides, read into the script's dataclasses.

    python training/grpo.py --config training/configs/seg_zero_3b.yaml learning_rate=2e-6

Keys are the fields of the script's dataclasses (its own arguments and TRL's config). Unlike a
plain `TrlParser`, every mistake is collected before anything is built and reported together:
a key that no dataclass has (with the closest valid names), a value of the wrong type or not
among a field's choices, and whatever the script's own checks find. YAML values are used as
they are; string values and overrides are converted by each field's type (so ``1e-6`` is a
float, which YAML itself would read as a string).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Keys the official Seg-Zero / EasyR1 recipes use that mean something else (or nothing) here.
RENAMED_KEYS = {
    "max_prompt_length": "TRL never truncates prompts (the image tokens stay whole); remove it",
    "rollout_batch_size": "use global_batch_size (prompts per optimizer step)",
    "n": "use num_generations (samples per prompt)",
    "lr": "use learning_rate",
    "kl_coef": "use beta (the KL coefficient)",
}


class RecipeError(ValueError):
    """The recipe cannot be used; `problems` lists every reason, each naming what to change."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the training recipe:\n{lines}")


@dataclass(frozen=True)
class CommandLine:
    """What the user typed: the recipe file, ``key=value`` overrides and bare flags."""

    config: Path | None
    overrides: dict[str, str]
    flags: tuple[str, ...]


def split_command_line(argv: Sequence[str], flags: Iterable[str] = ()) -> CommandLine:
    """Split ``[--config FILE] [--flag ...] [key=value ...]``; ``--key value`` and
    ``--key=value`` are accepted as overrides too (TrlParser's spelling)."""
    known_flags = set(flags)
    config, overrides, seen_flags = None, {}, []
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        index += 1
        if item == "--config":
            if index == len(items):
                raise RecipeError(["--config needs a file name"])
            config = Path(items[index])
            index += 1
        elif item.startswith("--config="):
            config = Path(item.split("=", 1)[1])
        elif item in known_flags:
            seen_flags.append(item)
        elif item.startswith("--"):
            key, has_value, value = item[2:].partition("=")
            if not has_value:
                if index == len(items) or items[index].startswith("--") or "=" in items[index]:
                    raise RecipeError([f"{item} needs a value (write {item[2:]}=VALUE)"])
                value = items[index]
                index += 1
            overrides[key.replace("-", "_")] = value
        elif "=" in item:
            key, _, value = item.partition("=")
            overrides[key.strip()] = value
        else:
            raise RecipeError([f"cannot read {item!r}: overrides are written key=value"])
    return CommandLine(config, overrides, tuple(seen_flags))


def load_recipe_file(path: Path) -> dict:
    """The YAML mapping in `path` (RecipeError when missing or not a mapping)."""
    import yaml

    if not path.is_file():
        raise RecipeError([f"config file {str(path)!r} does not exist"])
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError([f"config file {path} is not valid YAML: {error}"]) from error
    if not isinstance(data, dict):
        raise RecipeError([f"config file {path} must hold a mapping of key: value"])
    return data


def _unknown_key(key: str, source: str, valid: Iterable[str]) -> str:
    if key in RENAMED_KEYS:
        return f"{source}: key {key!r} is not used here: {RENAMED_KEYS[key]}"
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{source}: unknown key {key!r}{hint}"


def _converted(action: argparse.Action, key: str, value: object, source: str):
    """(value converted by the field's type, problem or None)."""
    if isinstance(value, str) and callable(action.type):
        try:
            value = action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            return value, f"{source}: {key}={value!r} is not a valid value ({error})"
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(str(choice) for choice in action.choices)
        return value, f"{source}: {key}={value!r} is not one of {choices}"
    return value, None


def parse_recipe(
    dataclass_types: Sequence[type],
    command_line: CommandLine,
    checks: Sequence[Callable[[argparse.Namespace, set[str]], list[str]]] = (),
):
    """The dataclass instances for the recipe, or RecipeError listing every problem.

    Each check gets the parsed values (an argparse namespace: every field of every dataclass)
    and the set of keys the user gave, and returns problems; checks run before the dataclasses
    are built, so they see values that a dataclass's own validation would reject one by one.
    Returns ``(instances..., given_keys)``.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types)
    # A bool field that defaults to True has two actions for its dest (--x and --no_x): the
    # value must become the default of both, or argparse keeps the first one's.
    actions: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if action.dest != "help":
            actions.setdefault(action.dest, []).append(action)
    recipe = load_recipe_file(command_line.config) if command_line.config else {}
    problems: list[str] = []
    given: set[str] = set()
    sources = [(str(command_line.config), recipe), ("command line", command_line.overrides)]
    for source, values in sources:
        for key, value in values.items():
            if key not in actions:
                problems.append(_unknown_key(key, source, actions))
                continue
            value, problem = _converted(actions[key][0], key, value, source)
            if problem:
                problems.append(problem)
                continue
            for action in actions[key]:
                action.default = value
                action.required = False
            given.add(key)
    missing = [key for key, group in actions.items() if any(a.required for a in group)]
    problems += [f"{key} is required: set it in the config file or as {key}=..." for key in missing]
    if problems:
        raise RecipeError(problems)

    namespace = parser.parse_args([])
    for check in checks:
        problems += check(namespace, given)
    if problems:
        raise RecipeError(problems)
    try:
        instances = parser.parse_args_into_dataclasses(args=[])
    except ValueError as error:  # a dataclass's own validation (e.g. TRL's batch checks)
        raise RecipeError([str(error)]) from error
    return (*instances, given)
