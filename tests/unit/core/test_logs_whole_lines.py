"""``logs.WholeLines``: each complete line reaches the stream in one write, whatever the
threads writing and however their text is cut into writes."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks import logs


class Sink:
    """A stream that gives the GIL away inside each write, as a pipe's write may."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> int:
        time.sleep(0)
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


def _print_lines(stream: object, tag: str, n: int, barrier: threading.Barrier) -> None:
    barrier.wait()
    for i in range(n):
        print(f'{{"thread": "{tag}", "i": {i}}}', file=stream)  # two writes: text, then newline


def _print_from_four_threads(stream: object) -> None:
    barrier = threading.Barrier(4)
    threads = [threading.Thread(target=_print_lines, args=(stream, t, 300, barrier)) for t in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_lines_printed_from_several_threads_each_arrive_whole() -> None:
    sink = Sink()
    _print_from_four_threads(logs.WholeLines(sink))
    out = "".join(sink.writes)
    expected = {f'{{"thread": "{t}", "i": {i}}}' for t in "abcd" for i in range(300)}
    assert sorted(out.splitlines()) == sorted(expected)
    assert all(w.endswith("\n") for w in sink.writes)


def test_without_it_the_same_threads_do_split_lines() -> None:
    """The test above can fail: printed straight to the sink, lines do interleave."""
    sink = Sink()
    _print_from_four_threads(sink)
    lines = "".join(sink.writes).splitlines()
    assert any(not (line.startswith("{") and line.endswith("}")) for line in lines)


@given(st.lists(st.text(alphabet="ab\n", max_size=12), max_size=20))
def test_any_cut_into_writes_gives_the_same_text_and_only_whole_lines_before_flush(
    pieces: list[str],
) -> None:
    sink = Sink()
    stream = logs.WholeLines(sink)
    for piece in pieces:
        assert stream.write(piece) == len(piece)
    text = "".join(pieces)
    assert "".join(sink.writes) == text[: text.rfind("\n") + 1]
    assert all(w.endswith("\n") for w in sink.writes)
    stream.flush()
    assert "".join(sink.writes) == text and sink.flushes == 1


@pytest.fixture
def std_streams() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    handlers = {n: logging.getLogger(n).handlers[:] for n in ("streamtasks", "async_processing")}
    yield
    sys.stdout, sys.stderr = saved
    for name, kept in handlers.items():
        logging.getLogger(name).handlers[:] = kept


def test_whole_lines_wraps_std_streams_once_and_moves_the_log_handler_onto_them(std_streams: None) -> None:
    logs.configure("INFO", "json")
    raw = sys.stderr
    logs.whole_lines()
    logs.whole_lines()
    assert isinstance(sys.stderr, logs.WholeLines) and sys.stderr.stream is raw
    assert isinstance(sys.stdout, logs.WholeLines) and not isinstance(sys.stdout.stream, logs.WholeLines)
    handler = logging.getLogger("streamtasks").handlers[0]
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
