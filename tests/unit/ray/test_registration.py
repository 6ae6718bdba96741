"""registration: the wait for a local raylet's registration polls instead of sleeping 1 s."""

from __future__ import annotations

from typing import Any

from ray._private import services

from streamtasks.ray.registration import POLL_S, _wait_alive, registration_polled


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_polls_until_the_node_is_alive_then_says_so() -> None:
    clock = Clock()
    tables: list[list[dict[str, Any]]] = [
        [],
        [{"NodeID": "other", "Alive": True}],
        [{"NodeID": "abc", "Alive": False}],
        [{"NodeID": "abc", "Alive": True}],
    ]
    asked = iter(tables)
    assert _wait_alive(lambda: next(asked), "abc", clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [POLL_S] * 3  # three misses, each followed by one short poll


def test_gives_up_after_the_wait_and_when_the_gcs_fails() -> None:
    clock = Clock()
    assert not _wait_alive(lambda: [], "abc", poll=0.5, wait=2.0, clock=clock, sleep=clock.sleep)
    assert clock.now == 2.0

    def failing() -> list[dict[str, Any]]:
        raise ConnectionError("GCS gone")

    assert not _wait_alive(failing, "abc", clock=clock, sleep=clock.sleep)


def test_rays_get_node_is_replaced_only_inside_the_block() -> None:
    original = services.get_node
    with registration_polled():
        assert services.get_node is not original
    assert services.get_node is original
    try:
        with registration_polled():
            raise RuntimeError("ray.init failed")
    except RuntimeError:
        pass
    assert services.get_node is original
