"""Training recipes: a YAML file plus command-line overrides, read into the script's dataclasses.

    python training/grpo.py --config training/configs/seg_zero_3b.yaml --learning_rate 2e-6
    python training/grpo.py --config training/configs/seg_zero_3b.yaml learning_rate=2e-6
    python training/grpo.py --help

TRL's convention (`trl.TrlParser`, as in open-r1): ``--config FILE`` names a YAML recipe whose
keys are the fields of the script's dataclasses (its own arguments and TRL's config), an
``env:`` mapping in it sets environment variables, ``--key value`` (or ``--key=value``; a bare
``--flag`` is true for a boolean, ``--no_flag`` false) overrides a key, and ``--help`` lists
every field with its help text. ``key=value`` is accepted as an alias of ``--key value``.

Unlike a plain `TrlParser`, which stops at the first bad argument and accepts unknown YAML keys
until the end, every mistake is collected before anything is built and reported together: a
key that no dataclass has (with the closest valid names), a value of the wrong type or not
among a field's choices, a required key left unset, and whatever the script's own checks find.
YAML values are used as they are; string values and overrides are converted by each field's
type (so ``1e-6`` is a float, which YAML itself would read as a string).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trl import TrlParser

# Keys the official Seg-Zero / EasyR1 recipes use that mean something else (or nothing) here.
RENAMED_KEYS = {
    "max_prompt_length": "TRL never truncates prompts (the image tokens stay whole); remove it",
    "rollout_batch_size": "use global_batch_size (prompts per optimizer step)",
    "n": "use num_generations (samples per prompt)",
    "lr": "use learning_rate",
    "kl_coef": "use beta (the KL coefficient)",
}
ENV_KEY = "env"  # TrlParser's: a mapping of environment variables in the recipe file

EPILOG = """\
Values are read in this order, later ones winning: the defaults above, the --config file,
the command line (--key value, --key=value or key=value). Every problem in them is reported
at once, before any model is loaded (exit code 2)."""


class RecipeError(ValueError):
    """The recipe cannot be used; `problems` lists every reason, each naming what to change."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the training recipe:\n{lines}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HfArgumentParser's default formatter (shows defaults) that keeps the docstring's layout."""


@dataclass(frozen=True)
class CommandLine:
    """What the user typed: the recipe file, the overrides by field name, the script's switches
    (e.g. ``--check``), whether help was asked for, and the problems found while reading it."""

    config: Path | None
    overrides: dict[str, object]
    flags: tuple[str, ...] = ()
    help: bool = False
    problems: tuple[str, ...] = ()


def new_default(config_class: type, name: str, default: object, help: str | None = None):
    """A field of `config_class` (a TRL config) with another default, keeping its help text
    (a plain ``field(default=...)`` in a subclass would drop it from ``--help``)."""
    metadata = dict(config_class.__dataclass_fields__[name].metadata)
    if help is not None:
        metadata["help"] = help
    return dataclasses.field(default=default, metadata=metadata)


def recipe_parser(
    dataclass_types: Sequence[type],
    *,
    prog: str | None = None,
    description: str | None = None,
    flags: Mapping[str, str] | None = None,
) -> TrlParser:
    """A `TrlParser` for `dataclass_types` whose help also lists ``--config`` and the script's
    `flags` (name -> help text; switches that are not recipe keys, such as ``--check``)."""
    parser = TrlParser(
        dataclass_types,
        prog=prog,
        usage="%(prog)s [--config FILE] [--help] [--key value | key=value ...]"
        + "".join(f" [{flag}]" for flag in flags or {}),
        description=description,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    options = parser.add_argument_group("recipe file and switches")
    options.add_argument(
        "--config", metavar="FILE", help="YAML recipe: keys are the fields listed below"
    )
    for flag, text in (flags or {}).items():
        options.add_argument(flag, action="store_true", help=text)
    return parser


def _field_actions(parser: argparse.ArgumentParser) -> dict[str, list[argparse.Action]]:
    """The actions of each dataclass field by name. A bool field that defaults to True has two
    (--x and --no_x): a value must become the default of both."""
    own = {"help", "config"} | {
        action.dest for action in parser._actions if isinstance(action, argparse._StoreTrueAction)
    }
    actions: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if action.dest not in own:
            actions.setdefault(action.dest, []).append(action)
    return actions


def _unknown_key(key: str, source: str, valid: Iterable[str]) -> str:
    if key in RENAMED_KEYS:
        return f"{source}: key {key!r} is not used here: {RENAMED_KEYS[key]}"
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{source}: unknown key {key!r}{hint}"


def _takes_value(item: str) -> bool:
    """Whether a command-line item can be the value of the option before it."""
    return not item.startswith("--")


def split_command_line(argv: Sequence[str], parser: argparse.ArgumentParser) -> CommandLine:
    """Read ``[--config FILE] [--switch ...] [--key value | --key=value | key=value ...]``,
    collecting every problem (an unknown key, an option without its value) in `problems`."""
    fields = _field_actions(parser)
    options = parser._option_string_actions
    config, overrides, flags, problems, wants_help = None, {}, [], [], False
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        index += 1
        if not item.startswith("--") and item not in ("-h",):
            key, has_value, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not has_value:
                problems.append(f"cannot read {item!r}: overrides are written key=value")
            elif key not in fields:
                problems.append(_unknown_key(key, "command line", fields))
            else:
                overrides[key] = value
            continue
        name, has_value, value = item.partition("=")
        action = options.get(name)
        if action is None:
            problems.append(_unknown_key(name[2:].replace("-", "_"), "command line", fields))
            if not has_value and index < len(items) and _takes_value(items[index]):
                index += 1  # its value, most likely: one problem, not two
            continue
        if action.dest == "help":
            wants_help = True
        elif action.nargs == 0:  # a script switch, or --no_x of a bool field
            if has_value:
                problems.append(f"{name} takes no value (got {value!r})")
            elif action.dest in fields:
                overrides[action.dest] = action.const
            else:
                flags.append(name)
        elif has_value:
            overrides[action.dest] = value
        elif action.nargs == "?":  # a bool field: a bare --x is true
            if index < len(items) and _takes_value(items[index]) and "=" not in items[index]:
                overrides[action.dest] = items[index]
                index += 1
            else:
                overrides[action.dest] = action.const
        elif action.nargs in ("+", "*"):
            values = []
            while index < len(items) and _takes_value(items[index]) and "=" not in items[index]:
                values.append(items[index])
                index += 1
            if not values and action.nargs == "+":
                problems.append(f"{name} needs at least one value")
            overrides[action.dest] = values
        elif index < len(items) and _takes_value(items[index]):
            overrides[action.dest] = items[index]
            index += 1
        else:
            problems.append(f"{name} needs a value: {name} VALUE (or {action.dest}=VALUE)")
    if "config" in overrides:
        config = Path(str(overrides.pop("config")))
    return CommandLine(config, overrides, tuple(flags), wants_help, tuple(problems))


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


def _convert_one(action: argparse.Action, key: str, value: object, source: str):
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


def _converted(action: argparse.Action, key: str, value: object, source: str):
    if action.nargs in ("+", "*") and isinstance(value, list):
        converted = [_convert_one(action, key, item, source) for item in value]
        problem = next((problem for _, problem in converted if problem), None)
        return [item for item, _ in converted], problem
    return _convert_one(action, key, value, source)


def _set_environment(values: object, source: str) -> list[str]:
    """TrlParser's ``env:`` section: environment variables for the run."""
    if not isinstance(values, dict):
        return [f"{source}: {ENV_KEY} must be a mapping of VARIABLE: value"]
    for name, value in values.items():
        os.environ[str(name)] = str(value)
    return []


def parse_recipe(
    parser: TrlParser,
    command_line: CommandLine,
    checks: Sequence[Callable[[argparse.Namespace, set[str]], list[str]]] = (),
):
    """The dataclass instances for the recipe, or RecipeError listing every problem.

    Each check gets the parsed values (an argparse namespace: every field of every dataclass)
    and the set of keys the user gave, and returns problems; checks run before the dataclasses
    are built, so they see values that a dataclass's own validation would reject one by one.
    Returns ``(instances..., given_keys)``.
    """
    fields = _field_actions(parser)
    recipe = load_recipe_file(command_line.config) if command_line.config else {}
    problems: list[str] = list(command_line.problems)
    if ENV_KEY in recipe and ENV_KEY not in fields:
        problems += _set_environment(recipe.pop(ENV_KEY), str(command_line.config))
    values: dict[str, object] = {}
    sources = [(str(command_line.config), recipe), ("command line", command_line.overrides)]
    for source, given_values in sources:
        for key, value in given_values.items():
            if key not in fields:
                problems.append(_unknown_key(key, source, fields))
                continue
            value, problem = _converted(fields[key][0], key, value, source)
            if problem:
                problems.append(problem)
            else:
                values[key] = value
    parser.set_defaults_with_config(**values)  # TrlParser's own: the values become defaults
    missing = [key for key, group in fields.items() if any(a.required for a in group)]
    problems += [
        f"{key} is required: set it in the config file or --{key} VALUE" for key in missing
    ]
    if problems:
        raise RecipeError(problems)

    namespace = parser.parse_args([])
    for check in checks:
        problems += check(namespace, set(values))
    if problems:
        raise RecipeError(problems)
    try:
        instances = parser.parse_args_into_dataclasses(args=[])
    except ValueError as error:  # a dataclass's own validation (e.g. TRL's batch checks)
        raise RecipeError([str(error)]) from error
    return (*instances[: len(parser.dataclass_types)], set(values))
