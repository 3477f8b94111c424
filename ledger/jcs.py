"""RFC 8785 (JCS) canonical JSON, fast: the bytes of the ``rfc8785`` package, two to three times
sooner.

Commitments of Procedures, the signed payload of a claim and the audit trail's entries are all
RFC 8785. The ``rfc8785`` package serialises in pure Python, one value at a time; here strings go
through the standard library's C escaper (with ``ensure_ascii`` off it escapes exactly what JCS
escapes, the same way) and only floats through the package (ECMAScript number formatting).
``tests/audit/test_canonical.py`` checks the bytes against the package with hypothesis and the
official examples.

Errors are the package's: ``rfc8785.IntegerDomainError`` (an integer beyond +/-(2^53-1)),
``rfc8785.FloatDomainError`` (NaN, infinities), ``rfc8785.CanonicalizationError`` for anything
else with no JSON form (a name that is not a string, a lone surrogate, another type); all are
``ValueError``. Nesting beyond Python's recursion limit raises ``RecursionError``, as the package
does.
"""

from __future__ import annotations

from json.encoder import encode_basestring as _escape

import rfc8785

_MAX_INT = 2**53 - 1  # what RFC 8785 (an IEEE 754 double) represents exactly


def _canonical(value, out: list[str]) -> None:
    """RFC 8785 for what JSON columns hold: strings, integers, booleans, null, arrays, objects,
    floats (those through the rfc8785 package). Strings use the standard library's C escaper:
    with ensure_ascii off it escapes exactly what JCS escapes, the same way (checked against the
    rfc8785 package by tests/audit/test_canonical.py)."""
    if isinstance(value, str):
        out.append(_escape(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if -_MAX_INT <= value <= _MAX_INT:
            out.append(str(value))
        else:
            rfc8785.dumps(value)  # raises its IntegerDomainError
            raise ValueError(f"integer out of range: {value}")
    elif isinstance(value, float):
        out.append(rfc8785.dumps(value).decode())
    elif isinstance(value, dict):
        out.append("{")
        # JCS orders members by their names' UTF-16 code units
        keys = list(value)
        if not all(isinstance(key, str) for key in keys):
            raise TypeError("object member names are strings")
        # code point order is UTF-16 order but for names beyond U+FFFF: ASCII names need no more
        keys.sort(key=None if all(key.isascii() for key in keys) else _utf16)
        for i, key in enumerate(keys):
            if i:
                out.append(",")
            out.append(_escape(key))
            out.append(":")
            _canonical(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _canonical(item, out)
        out.append("]")
    else:
        raise TypeError(f"no JSON form for {type(value).__name__}")


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be")


def canonical(value) -> bytes:
    """RFC 8785 canonical JSON, UTF-8 (raises ``rfc8785.CanonicalizationError`` or a subclass
    when there is none)."""
    out: list[str] = []
    try:
        _canonical(value, out)
        return "".join(out).encode("utf-8")  # a lone surrogate raises UnicodeEncodeError
    except rfc8785.CanonicalizationError:
        raise
    except (TypeError, UnicodeEncodeError, ValueError) as exc:
        raise rfc8785.CanonicalizationError(str(exc)) from exc
