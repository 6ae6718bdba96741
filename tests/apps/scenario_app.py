"""The shared scenario list's handlers (tests/integration/test_parity.py): run by the in-memory
app and by a real worker on Redis + Ray. Each entry's ``do`` field says what to do; a success
is recorded by sending to ``scenario:handled`` through the default sender (the in-memory app
while it is active, else a Producer on REDIS_URL)."""

from __future__ import annotations

from streamtasks import Message, Registry, Reject, Retry
from streamtasks.producer import current_sender

registry = Registry(group="scenarios")
HANDLED = "scenario:handled"
MAX_ENTRY_BYTES = 300


async def record(msg: Message) -> None:
    await current_sender().send(HANDLED, {"n": msg["n"], "attempt": msg.attempt})


@registry.stream_handler(
    "scenario_each", max_retries=2, backoff_base=0.05, backoff_max=0.05, max_entry_bytes=MAX_ENTRY_BYTES
)
async def each(msg: Message) -> None:
    do = msg["do"]
    if do == "fail":
        raise ValueError(f"always fails (attempt {msg.attempt})")
    if do == "flaky" and msg.attempt < 2:
        raise ConnectionError("fails on its first attempt")
    if do == "retry_after" and msg.attempt < 3:
        raise Retry(after=0.2)
    if do == "reject":
        raise Reject("not for us")
    if do == "json":
        msg.json("v")
    await record(msg)


@registry.stream_handler("scenario_batch", batch=True, max_retries=1, backoff_base=0.05, backoff_max=0.05)
async def batch(msgs: list[Message]) -> dict[str, Exception]:
    failed: dict[str, Exception] = {}
    for msg in msgs:
        if msg["do"] == "fail":
            failed[msg.id] = RuntimeError("this entry of the batch failed")
        else:
            await record(msg)
    return failed
