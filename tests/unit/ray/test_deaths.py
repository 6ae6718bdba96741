"""An actor's death (pure logic; Ray's GCS and errors stood in for): proof of death, the one
line it is logged as, and Ray's own "worker died" line kept out for our actors only."""

from __future__ import annotations

from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from streamtasks.ray import deaths
from streamtasks.ray.deaths import Death, Identity, RayletDeathLines, confirm, death_line, why

KNOWN = Identity(4242, "a17b337eed935fb11c63", "10.0.0.5")


class Handle:
    class _Id:
        def hex(self) -> str:
            return "actor-1"

    _actor_id = _Id()


def _row(monkeypatch: pytest.MonkeyPatch, row: dict[str, Any] | None) -> None:
    monkeypatch.setattr(deaths, "actor_table_entry", lambda actor_id: row)


def unavailable() -> ActorUnavailableError:
    return ActorUnavailableError("The actor is temporarily unavailable: RpcError: Socket closed", b"\0" * 16)


@pytest.mark.parametrize(
    ("state", "pid", "node", "dead"),
    [
        ("ALIVE", 4242, KNOWN.node_id, False),  # the same process: the connection broke, not it
        ("ALIVE", 4343, KNOWN.node_id, True),  # restarted already
        ("ALIVE", 4242, "another-node", True),  # restarted elsewhere (the same pid by chance)
        ("RESTARTING", 4242, KNOWN.node_id, True),
        ("DEAD", 0, "", True),
    ],
)
def test_a_death_is_what_the_gcs_confirms(
    monkeypatch: pytest.MonkeyPatch, state: str, pid: int, node: str, dead: bool
) -> None:
    _row(monkeypatch, {"State": state, "Pid": pid, "Address": {"NodeID": node}})
    death = confirm(Handle(), KNOWN, unavailable())
    assert (death is not None) == dead
    if death is not None:
        assert death.state == state
        assert death.new_pid == (pid if state == "ALIVE" else None)


def test_without_the_gcs_only_an_actor_died_error_is_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    _row(monkeypatch, None)
    assert confirm(Handle(), KNOWN, unavailable()) is None  # no proof: the visibility timeout decides
    died = ActorDiedError()
    assert confirm(Handle(), KNOWN, died) == Death(why(died), "DEAD", None)


def test_why_takes_rays_exit_type_and_detail_when_it_gave_them() -> None:
    error = ActorDiedError()
    error.error_msg = (
        "The actor died unexpectedly. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker "
        "unexpectedly exits with a connection error code 2. End of file. Some common causes ..."
    )
    assert why(error) == "SYSTEM_ERROR: Worker unexpectedly exits with a connection error code 2"
    assert "Ray lost the connection" in why(unavailable())
    never = ActorDiedError()
    never.error_msg = (
        "The actor died unexpectedly.\n\tclass_name: WorkerActor\nThe actor never ran - it was cancelled."
    )
    assert why(never) == "The actor never ran - it was cancelled."  # its last line


def test_the_death_line_says_which_actor_where_why_how_many_and_where_they_went() -> None:
    death = Death("SYSTEM_ERROR: killed", "ALIVE", 5151)
    line = death_line(1, "w-a1", KNOWN, death, {"jobs": 7, "orders": 2})
    assert line == (
        "actor 1 (w-a1, pid 4242 on node 10.0.0.5 (a17b337eed93)) died: SYSTEM_ERROR: killed; it held 9 "
        "entries: handed to the live actors, claimable at once (7 of jobs, 2 of orders); Ray restarted "
        "it as pid 5151"
    )
    assert "nothing to hand over" in death_line(1, "w-a1", KNOWN, death, {})
    assert "reclaimed after the visibility timeout" in death_line(1, "w-a1", KNOWN, death, None)


def _raylet(pid: int) -> dict[str, Any]:
    line = f"A worker died or was killed while executing a task ... Worker PID: {pid} Worker exit type: X"
    return {"lines": [line], "pid": "raylet", "is_err": False}


def test_rays_worker_died_line_is_kept_out_for_our_actors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RayletDeathLines, "_pids", {4242})
    assert not RayletDeathLines.keep(_raylet(4242))
    assert RayletDeathLines.keep(_raylet(999))  # another process: Ray's line goes through
    other = {"lines": ["(raylet) node out of memory"], "pid": "raylet", "is_err": False}
    assert RayletDeathLines.keep(other)
    assert RayletDeathLines.keep({"lines": ["Worker PID: 4242"], "pid": 17, "is_err": True})  # an actor's own
