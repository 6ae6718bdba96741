"""``redis+sentinel://`` URLs: what each part means, bad ones refused in one line, secrets kept
out of logs (the URL is input from outside: hand-picked cases and hypothesis)."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks.config import RedisConfig
from streamtasks.connect import check_url, client_for
from streamtasks.errors import ConfigError
from streamtasks.logs import redact
from streamtasks.sentinel import (
    DEFAULT_SENTINEL_PORT,
    SENTINEL_TIMEOUT_S,
    SentinelRedis,
    is_sentinel_url,
    parse_sentinel_url,
)


def test_the_parts_of_a_sentinel_url() -> None:
    t = parse_sentinel_url("redis+sentinel://:secret@h1:26380,h2,[::1]:5000/mymaster/3?socket_timeout=4")
    assert t.sentinels == (("h1", 26380), ("h2", DEFAULT_SENTINEL_PORT), ("::1", 5000))
    assert t.service == "mymaster"
    assert t.master == {"password": "secret", "db": 3, "socket_timeout": 4.0}
    assert t.sentinel == {}  # the userinfo is the master's: sentinels get no password


def test_db_defaults_to_0_and_a_user_is_the_masters() -> None:
    t = parse_sentinel_url("redis+sentinel://app:pw@h/svc")
    assert t.master == {"username": "app", "password": "pw", "db": 0}


def test_sentinel_credentials_come_from_the_query_and_only_go_to_the_sentinels() -> None:
    t = parse_sentinel_url("redis+sentinel://:m@h/svc?sentinel_password=s&sentinel_username=sen")
    assert t.sentinel == {"password": "s", "username": "sen"}
    assert t.master == {"password": "m", "db": 0}


def test_tls_applies_to_the_master_and_the_sentinels() -> None:
    t = parse_sentinel_url("rediss+sentinel://h/svc?ssl_ca_certs=/ca.crt&ssl_cert_reqs=required")
    assert t.master["ssl"] is True and t.master["ssl_ca_certs"] == "/ca.crt"
    assert t.sentinel == {"ssl": True, "ssl_ca_certs": "/ca.crt", "ssl_cert_reqs": "required"}
    assert "connection_class" not in t.master  # the Sentinel pool picks its own TLS class


def test_the_repr_shows_no_password() -> None:
    assert "pw" not in repr(parse_sentinel_url("redis+sentinel://:pw@h/svc?sentinel_password=pw"))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:26379", "names the monitored service"),
        ("redis+sentinel:///svc", "at least one sentinel"),
        ("redis+sentinel://:pw@/svc", "at least one sentinel"),
        ("redis+sentinel://h:port/svc", "invalid port"),
        ("redis+sentinel://h:0/svc", "invalid port"),
        ("redis+sentinel://h:70000/svc", "invalid port"),
        ("redis+sentinel://h,,x/svc", "empty sentinel host"),
        ("redis+sentinel://h/svc/0/1", "/service[/db]"),
        ("redis+sentinel://h/svc/zero", "database is a number"),
    ],
)
def test_a_bad_url_is_one_clear_error(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        check_url(url)
    assert says in str(caught.value)


def test_the_client_follows_the_service_through_the_sentinels() -> None:
    redis = client_for("redis+sentinel://h1:1,h2:2/svc/2?sentinel_password=sp")
    assert isinstance(redis, SentinelRedis)
    pool = redis.connection_pool
    assert pool.service_name == "svc" and pool.is_master  # type: ignore[attr-defined]
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["socket_timeout"] is None  # a blocking XREADGROUP may wait
    sentinels = pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
    kwargs = sentinels[0].connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["password"]) == ("h1", 1, "sp")
    assert kwargs["socket_timeout"] == SENTINEL_TIMEOUT_S  # a silent sentinel: ask the next


def test_redis_url_in_the_environment_may_name_sentinels() -> None:
    config = RedisConfig.from_env({"REDIS_URL": "redis+sentinel://:pw@s1:5,s2/svc/1"})
    assert (config.host, config.port) == ("s1", 5)
    assert config.url == "redis+sentinel://:pw@s1:5,s2/svc/1"
    with pytest.raises(ConfigError, match="REDIS_URL: a Sentinel URL names the monitored service"):
        RedisConfig.from_env({"REDIS_URL": "redis+sentinel://s1"})


def test_redaction_covers_both_passwords() -> None:
    url = "redis+sentinel://user:masterpw@h:1,h2:2/svc/0?sentinel_password=sentinelpw&socket_timeout=1"
    said = redact(f"cannot reach {url}")
    assert "masterpw" not in said and "sentinelpw" not in said
    assert "socket_timeout=1" in said


hosts = st.text(string.ascii_lowercase + string.digits + ".-", min_size=1, max_size=20)
ports = st.integers(1, 65535)
services = st.text(string.ascii_letters + string.digits + "_-.", min_size=1, max_size=20)
passwords = st.text(min_size=3, max_size=30).filter(lambda p: p.strip() == p and "*" not in p)


@given(st.lists(st.tuples(hosts, ports), min_size=1, max_size=5), services, st.integers(0, 15), passwords)
def test_any_well_formed_url_parses_back_to_its_parts(
    sentinels: list[tuple[str, int]], service: str, db: int, password: str
) -> None:
    netloc = ",".join(f"{h}:{p}" for h, p in sentinels)
    url = f"redis+sentinel://:{quote(password, safe='')}@{netloc}/{service}/{db}"
    t = parse_sentinel_url(url)
    assert t.sentinels == tuple(sentinels)
    assert (t.service, t.master["db"], t.master["password"]) == (service, db, password)
    assert redact(url) == f"redis+sentinel://:***@{netloc}/{service}/{db}"


@given(st.text(max_size=80))
def test_any_text_after_the_scheme_parses_or_is_a_value_error(rest: str) -> None:
    url = f"redis+sentinel://{rest}"
    assert is_sentinel_url(url)
    try:
        t = parse_sentinel_url(url)
    except ValueError:
        return
    assert t.sentinels and t.service
