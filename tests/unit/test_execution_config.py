"""One execution config (``agebench.core.config``) and one set of shared literal types
(``agebench.core.types``): checked once, spelled the same by the API and every command."""

from __future__ import annotations

import inspect
from dataclasses import FrozenInstanceError

import click
import pytest

import agebench
from agebench.cli import main
from agebench.core.config import EXECUTION_FIELDS, REFERENCE_CPU, ExecutionConfig
from agebench.core.types import BACKENDS, DEVICES, FACES_MODES, PRECISIONS, TUNINGS

#: the commands that run a model, each taking the execution options
RUNNING_COMMANDS = ("predict", "eval", "compare", "bench")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device", "tpu"),
        ("backend", "tensorflow"),
        ("precision", "int8"),
        ("tuning", "fastest"),
        ("batch_size", 0),
        ("workers", 0),
    ],
)
def test_a_value_out_of_range_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}={value!r}: "):
        ExecutionConfig(**{field: value})


def test_defaults_are_the_commands_and_the_config_is_frozen():
    config = ExecutionConfig()
    assert (config.device, config.backend, config.precision, config.tuning) == (
        "auto",
        "auto",
        "auto",
        "auto",
    )
    assert config.batch_size is None and config.workers is None
    with pytest.raises(FrozenInstanceError):
        config.device = "cpu"  # type: ignore[misc]
    assert REFERENCE_CPU.device == "cpu" and REFERENCE_CPU.tuning == "manifest"


def test_options_round_trip():
    config = ExecutionConfig(device="cpu", tuning="retune", batch_size=8, workers=2)
    assert set(config.as_options()) == set(EXECUTION_FIELDS)
    assert ExecutionConfig.from_options({**config.as_options(), "faces": "none"}) == config


@pytest.mark.parametrize("function", ["load", "predict", "evaluate", "compare"])
def test_every_api_call_takes_the_execution_options_with_the_configs_defaults(function):
    parameters = inspect.signature(getattr(agebench, function)).parameters
    defaults = ExecutionConfig().as_options()
    for name in EXECUTION_FIELDS:
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameters[name].default == defaults[name], name


def _option(command: str, flag: str) -> click.Option:
    return next(
        p for p in main.commands[command].params if isinstance(p, click.Option) and flag in p.opts
    )


@pytest.mark.parametrize("command", RUNNING_COMMANDS)
def test_every_running_command_has_the_same_execution_options(command):
    for name in EXECUTION_FIELDS:
        flag = "--" + name.replace("_", "-")
        mine, predict = _option(command, flag), _option("predict", flag)
        assert (mine.name, mine.type.to_info_dict(), mine.default, mine.help) == (
            predict.name,
            predict.type.to_info_dict(),
            predict.default,
            predict.help,
        ), flag


@pytest.mark.parametrize(
    ("command", "flag", "values"),
    [
        ("predict", "--device", DEVICES),
        ("predict", "--backend", BACKENDS),
        ("predict", "--precision", PRECISIONS),
        ("predict", "--tuning", TUNINGS),
        ("eval", "--faces", FACES_MODES),
        ("compare", "--faces", FACES_MODES),
    ],
)
def test_the_choices_are_the_shared_tuples(command, flag, values):
    choice = _option(command, flag).type
    assert isinstance(choice, click.Choice)
    assert tuple(choice.choices) == values
