"""Which processes a worker about to start a local Ray stops: the agents of a dead local Ray
(reparented to pid 1), this user's, and nothing else (pure: a /proc tree made by the test)."""

from __future__ import annotations

from pathlib import Path

from streamtasks.ray.leftovers import leftover_agents


def proc(root: Path, pid: int, ppid: int, title: str, comm: str = "python") -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0")
    (d / "cmdline").write_bytes(title.encode() + b"\0" * 12)


def test_only_agents_whose_raylet_died_are_left_over(tmp_path: Path) -> None:
    proc(tmp_path, 100, 1, "ray::DashboardAgent")  # a dead Ray's: reparented to pid 1
    proc(tmp_path, 101, 1, "ray::RuntimeEnvAgent", comm="ray::RuntimeEnv) x")  # odd comm
    proc(tmp_path, 200, 150, "ray::DashboardAgent")  # a live raylet's child
    proc(tmp_path, 300, 1, "python -m streamtasks worker app")  # not an agent
    proc(tmp_path, 400, 1, "ray::WorkerActor")  # an actor: Ray stops it itself
    (tmp_path / "self").mkdir()  # not a pid
    uid = (tmp_path / "100").stat().st_uid
    assert sorted(leftover_agents(tmp_path, uid)) == [
        (100, "ray::DashboardAgent"),
        (101, "ray::RuntimeEnvAgent"),
    ]
    assert leftover_agents(tmp_path, uid + 1) == []  # another user's are not ours to stop
