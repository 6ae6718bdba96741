"""The dashboard's pure parts: access rules, the worker book, input checks, SVG charts."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks.observe.dashboard import Access
from streamtasks.observe.dashboard.queries import BadInput, DeadFilter, below, entry_id, page_size
from streamtasks.observe.dashboard.sampler import WorkerBook
from streamtasks.observe.dashboard.svg import line_chart

HOST = "127.0.0.1:8555"


def headers(access: Access, **extra: str) -> dict[str, str]:
    return {"X-CSRF-Token": access.csrf_token, **extra}


def test_a_write_needs_the_token_and_the_csrf_token_and_no_foreign_origin() -> None:
    access = Access(token="tok-123")
    ok = headers(access, Authorization="Bearer tok-123")
    assert access.refuse_write(ok, HOST) is None
    assert access.refuse_write({**ok, "Origin": f"http://{HOST}"}, HOST) is None
    assert "cross-origin" in str(access.refuse_write({**ok, "Origin": "http://evil"}, HOST))
    assert "CSRF" in str(access.refuse_write({"Authorization": "Bearer tok-123"}, HOST))
    assert "token" in str(access.refuse_write(headers(access, Authorization="Bearer tok-12"), HOST))
    assert "token" in str(access.refuse_write(headers(access), HOST))
    assert "read-only" in str(Access(token="tok-123", read_only=True).refuse_write(ok, HOST))
    assert "disabled" in str(Access().refuse_write(ok, HOST))


def test_basic_auth_guards_reads_and_allows_writes() -> None:
    access = Access(user="ops", password="pw:with:colons")
    good = "Basic " + base64.b64encode(b"ops:pw:with:colons").decode()
    assert not access.may_read({}) and access.may_read({"Authorization": good})
    assert not access.may_read({"Authorization": "Basic !!notbase64"})
    assert access.refuse_write(headers(access, Authorization=good), HOST) is None


def test_secrets_are_not_in_the_repr_and_the_csrf_token_is_not_the_secret() -> None:
    access = Access(token="tok-secret-1", user="ops", password="pw-secret-2")
    assert "tok-secret-1" not in repr(access) and "pw-secret-2" not in repr(access)
    assert access.csrf_token not in ("tok-secret-1", "pw-secret-2") and len(access.csrf_token) == 64
    assert Access.from_env(env={"STREAMTASKS_DASHBOARD_TOKEN": "t"}).writable
    assert not Access.from_env(env={}).writable


def beat(consumer: str, state: str = "reading", age: float = 1.0) -> dict[str, object]:
    return {"consumer": consumer, "state": state, "heartbeat_age": age, "streams": ["s"], "in_flight": 1}


def test_the_worker_book_marks_a_vanished_worker_dead_or_stopped_and_forgets_it() -> None:
    book = WorkerBook(forget_after=60)
    book.update([beat("a"), beat("b", "draining")], [], now=100)
    rows = {w["consumer"]: w for w in book.update([], [], now=105)}
    assert rows["a"]["state"] == "dead" and rows["b"]["state"] == "stopped"
    assert rows["a"]["heartbeat_age"] == pytest.approx(6.0) and rows["a"]["in_flight"] is None
    back = {w["consumer"]: w["state"] for w in book.update([beat("a")], [], now=106)}
    assert back == {"a": "reading", "b": "stopped"}
    assert book.update([], [], now=200) == []


def test_a_consumer_holding_entries_without_a_heartbeat_is_dead() -> None:
    rows = WorkerBook().update([], [{"stream": "s", "consumer": "ghost", "pending": 3, "idle": 50.0}], now=1)
    assert [(w["consumer"], w["state"]) for w in rows] == [("ghost", "dead")]


@pytest.mark.parametrize(
    "bad", ["", "1", "1-", "-1", "a-1", "1-1-1", "1-1 ", "99999999999999999999-0", "*", "+"]
)
def test_entry_ids_are_checked(bad: str) -> None:
    with pytest.raises(BadInput):
        entry_id(bad)


@given(ms=st.integers(0, 2**64 - 1), seq=st.integers(0, 2**64 - 1))
def test_below_is_the_previous_id(ms: int, seq: int) -> None:
    prev = below(entry_id(f"{ms}-{seq}"))
    if (ms, seq) == (0, 0):
        assert prev is None
    else:
        assert prev is not None
        pm, ps = map(int, prev.split("-"))
        assert (pm, ps) < (ms, seq) and (ps == seq - 1 or (pm == ms - 1 and ps == 2**64 - 1))


def test_page_sizes_and_filters() -> None:
    assert page_size(None) == 50 and page_size("500") == 500
    for bad in ("0", "501", "-1", "1e3", "ten", " 5"):
        with pytest.raises(BadInput):
            page_size(bad)
    flt = DeadFilter.parse({"handler": "h", "since": "1000", "until": 2000})
    assert flt.id_range() == ("1999-18446744073709551615", "1000-0")
    assert DeadFilter.parse({"until": "0"}).id_range()[0] is None
    with pytest.raises(BadInput):
        DeadFilter.parse({"reason": "x" * 201})


def test_a_chart_escapes_its_labels_and_skips_missing_points() -> None:
    svg = line_chart(
        "<script>", "ms", [0.0, 3600.0, 7200.0], {"p<95>": [1.0, None, 3.0], "nan": [float("nan")] * 3}
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "p&lt;95&gt;" in svg
    assert svg.count("<polyline") == 1
    assert "no data" in line_chart("t", "", [], {})


def test_the_models_panel_named_by_the_entry_point_is_a_panel() -> None:
    """pyproject's ``streamtasks.dashboard_panels`` entry point names a real Panel (the product's
    "models"), so an installed streamtasks shows it."""
    import importlib
    import re
    from pathlib import Path

    from streamtasks.observe.dashboard import Panel

    text = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."streamtasks.dashboard_panels"]', 1)[1].split("\n[", 1)[0]
    found = re.search(r'^models = "([\w.]+):(\w+)"$', section, re.MULTILINE)
    assert found is not None
    module, attr = found.groups()
    panel = getattr(importlib.import_module(module), attr)
    assert isinstance(panel, Panel) and panel.name == "models" and panel.health is not None
