"""The field checks of the adserving wire format: names, numbers, booleans, addresses and JSON
within the limits PostgreSQL can store, each failure a :class:`~streamtasks.errors.DecodeError`
with its reason. Pure and on the hot path (``records`` builds the rows from them).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import msgspec

from ..errors import DecodeError
from ..message import Message

#: Longest ``model_name`` / ``request_id`` accepted (characters).
MAX_NAME_LENGTH = 256
#: Longest idempotency key (the producer's ``_st_mid``) accepted (characters).
MAX_KEY_LENGTH = 512
#: Deepest JSON nesting accepted (arrays and objects).
MAX_JSON_DEPTH = 64
#: Longest number literal accepted in JSON, and the largest decimal exponent: both far inside
#: what PostgreSQL's numeric (and so jsonb) can hold, which ``1e-20000`` is not.
MAX_NUMBER_LENGTH = 1000
MAX_NUMBER_EXPONENT = 1000

#: Distinct source addresses whose parsed form is kept (they are immutable).
IP_CACHE_SIZE = 65536

IPAddress = IPv4Address | IPv6Address

_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_EMPTY_OBJECT = "{}"


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_LENGTH:
        raise ValueError("number literal too long")
    e = text.find("e")
    if e < 0:
        e = text.find("E")
    if e >= 0 and abs(int(text[e + 1 :])) > MAX_NUMBER_EXPONENT:
        raise ValueError(f"number {text[:40]!r} out of range")
    return float(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)
# The same without the per-float Python hook (the C scanner parses floats itself): used when
# no number in the text can be out of range, i.e. almost always. parse_constant costs
# nothing until a NaN/Infinity shows up.
_FAST_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# Set by JSONDecoder.__init__ (the C scanner); typeshed does not declare it.
_SCAN: Callable[[str, int], tuple[Any, int]] = DECODER.scan_once  # type: ignore[attr-defined]
_FAST_SCAN: Callable[[str, int], tuple[Any, int]] = _FAST_DECODER.scan_once  # type: ignore[attr-defined]
#: Text that may hold a number _parse_float refuses: an exponent of 4+ digits, or a digit run
#: longer than MAX_NUMBER_LENGTH. Only such text pays for the checked decoder.
_EXPONENT_DIGITS = len(str(MAX_NUMBER_EXPONENT))
_MAY_BE_OUT_OF_RANGE = re.compile(rf"[eE][+-]?\d{{{_EXPONENT_DIGITS}}}|\d{{{MAX_NUMBER_LENGTH}}}")
#: The same for text too short to hold a number literal longer than MAX_NUMBER_LENGTH: the
#: exponent alone (3x cheaper to look for than both).
_MAY_HAVE_A_LARGE_EXPONENT = re.compile(rf"[eE][+-]?\d{{{_EXPONENT_DIGITS}}}")
_JSON_WHITESPACE = " \t\n\r"
#: msgspec's C decoder, ~6x faster than the standard one on short text. It is only trusted to
#: accept: whatever it refuses (NaN, a lone surrogate escape, a float past the double range,
#: malformed text) goes to the standard decoder, which decides as before and says why.
_MSGSPEC = msgspec.json.Decoder()


#: Longer text goes to the checked decoder without the scan for numbers it may refuse: the scan
#: (a regex) costs ~25 ns a character, 1.2-3 ms on 50 KB, where the checked decoder's hook costs
#: well under a microsecond per float literal; on short text the scan wins.
FAST_SCAN_MAX_LENGTH = 2048


def loads(raw: str) -> Any:
    """``DECODER.decode``: by msgspec when no number in the text can be out of range and it
    accepts the text, else by the standard decoder without its two regex matches when the
    text starts with a value."""
    size = len(raw)
    if size > FAST_SCAN_MAX_LENGTH:
        checked = True
    else:
        scan_for = _MAY_HAVE_A_LARGE_EXPONENT if size <= MAX_NUMBER_LENGTH else _MAY_BE_OUT_OF_RANGE
        checked = scan_for.search(raw) is not None
        if not checked:
            try:
                return _MSGSPEC.decode(raw)
            except (msgspec.DecodeError, RecursionError):
                pass  # the standard decoder decides, and says why
    decoder, scan = (DECODER, _SCAN) if checked else (_FAST_DECODER, _FAST_SCAN)
    try:
        value, end = scan(raw, 0)
    except StopIteration:  # leading whitespace, or not JSON: the full decoder says which
        return decoder.decode(raw)
    if end != len(raw) and raw[end:].strip(_JSON_WHITESPACE):
        raise ValueError(f"extra data at character {end}")
    return value


def required(fields: Mapping[str, str], name: str) -> str:
    raw = fields.get(name)
    if raw is None:
        raise DecodeError("missing_field", f"field {name!r} is missing")
    return raw


def check_text(text: str, what: str) -> None:
    """PostgreSQL text cannot hold NUL, nor (as UTF-8) a lone surrogate."""
    if "\x00" in text:
        raise DecodeError("nul_byte", f"{what} contains a NUL character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("lone_surrogate", f"{what} contains a lone surrogate") from None


def name_field(fields: Mapping[str, str], name: str) -> str:
    raw = required(fields, name)
    if not raw:
        raise DecodeError("invalid_value", f"field {name!r} is empty")
    if len(raw) > MAX_NAME_LENGTH:
        raise DecodeError("too_large", f"field {name!r} is longer than {MAX_NAME_LENGTH}")
    check_text(raw, f"field {name!r}")
    return raw


def key_field(msg: Message) -> str:
    key = msg.idempotency_key
    if len(key) > MAX_KEY_LENGTH:
        raise DecodeError("too_large", f"idempotency key (message id) is longer than {MAX_KEY_LENGTH}")
    check_text(key, "message id")
    return key


def json_field(fields: Mapping[str, str], name: str) -> tuple[Any, str]:
    return decode_json(required(fields, name), name)


def decode_json(raw: str, name: str) -> tuple[Any, str]:
    check_text(raw, f"field {name!r}")
    # Cheap bounds first: nesting cannot exceed the number of brackets, and a decoded
    # string can only hold NUL or a surrogate if the text has a \u escape.
    may_be_deep = raw.count("[") + raw.count("{") > MAX_JSON_DEPTH
    has_escapes = "\\u" in raw
    try:
        value = loads(raw)
    except RecursionError:
        raise DecodeError("too_deep", f"field {name!r} nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, numbers out of range, int digit limit
        raise DecodeError("invalid_json", f"field {name!r}: {exc}") from None
    if may_be_deep or has_escapes:
        check_tree(value, name)
    return value, raw


def check_tree(value: Any, name: str) -> None:
    """Walk decoded JSON iteratively: depth <= MAX_JSON_DEPTH, every string storable."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, f"a string in field {name!r}")
        elif isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise DecodeError("too_deep", f"field {name!r} nests over {MAX_JSON_DEPTH} levels")
            if isinstance(node, dict):
                stack.extend((k, depth) for k in node)
                stack.extend((v, depth + 1) for v in node.values())
            else:
                stack.extend((v, depth + 1) for v in node)


def metadata_field(fields: Mapping[str, str]) -> tuple[Mapping[str, Any], str]:
    raw = fields.get("metadata")
    if raw is None or raw == "":
        return {}, _EMPTY_OBJECT
    value, text = decode_json(raw, "metadata")
    if not isinstance(value, dict):
        raise DecodeError("wrong_type", "field 'metadata' must be a JSON object")
    return value, text


def number_field(fields: Mapping[str, str], name: str) -> float:
    raw = required(fields, name)
    try:
        value = float(raw)
    except ValueError:
        raise DecodeError("wrong_type", f"field {name!r} is not a number") from None
    if not math.isfinite(value):
        raise DecodeError("invalid_value", f"field {name!r} must be finite")
    return value


def bool_field(raw: str | None, name: str) -> bool:
    if raw is None or raw == "":
        return False
    value = _BOOLS.get(raw)
    if value is None:
        value = _BOOLS.get(raw.strip().lower())
        if value is None:
            raise DecodeError("wrong_type", f"field {name!r} must be true/false/1/0")
    return value


def packed_ip(ip: IPAddress | None) -> bytes | None:
    return None if ip is None else ip.packed


def ip_field(raw: str | None) -> IPAddress | None:
    if raw is None or raw == "":
        return None
    try:
        return parse_ip(raw)
    except ValueError:
        raise DecodeError("invalid_value", "field 'source_ip' is not an IP address") from None


@functools.lru_cache(maxsize=IP_CACHE_SIZE)
def parse_ip(raw: str) -> IPAddress:
    # ipaddress parses in pure Python (~10 us); API clients repeat, so most entries hit here.
    return ip_address(raw)
