"""The command line for development: --version, shell completion, the worker's dev options."""

from __future__ import annotations

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

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
    """click's completion, as documented in docs/guides/handlers.md (`_STREAMTASKS_COMPLETE=bash_source`)."""
    assert complete("streamtasks wor") == ["worker"]
    assert complete("streamtasks sch") == ["scheduled", "schema"]
    assert complete("streamtasks schem") == ["schema"]
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


def test_inline_means_task_mode_when_no_mode_is_given() -> None:
    """Actor mode is the default, and ``--executor inline`` (typed or from the environment)
    without a mode is task mode, inline: the app is loaded next (here: it does not exist)."""
    runner, refused = CliRunner(), "--mode actors runs on Ray: not with --executor inline"
    unset: dict[str, str | None] = {"STREAMTASKS_EXECUTOR": None, "STREAMTASKS_MODE": None}
    typed = runner.invoke(main, ["worker", "no_such_app_module_here", "--executor", "inline"], env=unset)
    assert typed.exit_code == 1 and refused not in typed.output
    assert "no_such_app_module_here" in typed.output
    env = {"STREAMTASKS_EXECUTOR": "inline", "STREAMTASKS_MODE": None}
    from_env = runner.invoke(main, ["worker", "no_such_app_module_here"], env=env)
    assert from_env.exit_code == 1 and refused not in from_env.output


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


SOURCES = st.sampled_from(["command line", "environment", "default"])


@settings(max_examples=60, deadline=None)
@given(
    executor=st.sampled_from(["ray", "inline"]), executor_from=SOURCES,
    mode=st.sampled_from(["tasks", "actors"]), mode_from=SOURCES,
)  # fmt: skip
def test_inline_and_actor_mode_refuse_each_other_unless_inline_is_typed_over_the_environment(
    executor: str, executor_from: str, mode: str, mode_from: str
) -> None:
    """Every way of giving ``--executor`` and ``--mode``: the pair inline + actors is a usage
    error, except over the default mode (actors), or ``--executor inline`` typed over
    ``STREAMTASKS_MODE=actors`` from the environment (task mode then). Anything else goes on
    to load the app (here: missing)."""
    if executor_from == "default":
        executor = "ray"
    if mode_from == "default":
        mode = "actors"
    args = ["worker", "no_such_app_module_here"]
    env: dict[str, str | None] = {"STREAMTASKS_EXECUTOR": None, "STREAMTASKS_MODE": None}
    for option, value, source in (("executor", executor, executor_from), ("mode", mode, mode_from)):
        if source == "command line":
            args += [f"--{option}", value]
        elif source == "environment":
            env[f"STREAMTASKS_{option.upper()}"] = value
    result = CliRunner().invoke(main, args, env=env)
    typed_over_env = executor_from == "command line" and mode_from == "environment"
    if executor == "inline" and mode == "actors" and not (typed_over_env or mode_from == "default"):
        assert result.exit_code == 2, result.output
        assert "--mode actors runs on Ray: not with --executor inline" in result.output
    else:
        assert result.exit_code == 1, result.output
        assert "no_such_app_module_here" in result.output and "Traceback" not in result.output
