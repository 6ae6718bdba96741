"""The command line for development: --version, shell completion, the worker's dev options."""

from __future__ import annotations

from click.testing import CliRunner

from streamtasks import __version__
from streamtasks.cli import main


def test_version_flag() -> None:
    result = CliRunner().invoke(main, ["--version"], prog_name="streamtasks")
    assert result.exit_code == 0 and result.output == f"streamtasks, version {__version__}\n"


def complete(words: str) -> list[str]:
    env = {
        "_STREAMTASKS_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    result = CliRunner().invoke(main, [], prog_name="streamtasks", env=env)
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.output.splitlines()]


def test_shell_completion_completes_commands_and_options() -> None:
    """click's completion, as documented in the README (`_STREAMTASKS_COMPLETE=bash_source`)."""
    assert complete("streamtasks wor") == ["worker"]
    assert complete("streamtasks sch") == ["schema"]
    assert set(complete("streamtasks worker app --re")) == {"--redis-url", "--reload"}
    assert complete("streamtasks worker app --executor ") == ["ray", "inline"]


def test_inline_executor_refuses_ray_options_as_a_usage_error() -> None:
    result = CliRunner().invoke(
        main, ["worker", "orders_app", "--executor", "inline", "--ray-address", "auto"]
    )
    assert result.exit_code == 2
    assert "--ray-address and --num-cpus are Ray options: not with --executor inline" in result.output


def test_inline_start_with_the_inline_executor_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["worker", "orders_app", "--executor", "inline", "--inline-start"])
    assert result.exit_code == 2
    assert "--inline-start is for Ray: with --executor inline every entry runs here" in result.output


def test_inline_on_the_command_line_wins_over_actor_mode_from_the_environment() -> None:
    """``STREAMTASKS_MODE=actors`` (a deployment's setting) and ``--executor inline`` typed on
    the command line: task mode, inline; the app is loaded next (here: it does not exist). Both
    on the command line, or both from the environment: the usage error."""
    runner, refused = CliRunner(), "--mode actors runs on Ray: not with --executor inline"
    app = ["worker", "no_such_app_module_here", "--executor", "inline"]
    typed = runner.invoke(main, app, env={"STREAMTASKS_MODE": "actors"})
    assert typed.exit_code == 1 and refused not in typed.output
    assert "no_such_app_module_here" in typed.output
    given = runner.invoke(main, [*app, "--mode", "actors"])
    assert given.exit_code == 2 and refused in given.output
    env = {"STREAMTASKS_MODE": "actors", "STREAMTASKS_EXECUTOR": "inline"}
    both = runner.invoke(main, ["worker", "no_such_app_module_here"], env=env)
    assert both.exit_code == 2 and refused in both.output
