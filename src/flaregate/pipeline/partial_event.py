"""The end of an SSE event the client got only part of (a pass-through stream whose upstream
broke mid-event, docs/architecture.md "Pass-through streams").

The client already holds the partial bytes; they cannot be taken back. So the gateway ends
them so that they still parse: when the event is a ``data:`` line of JSON cut anywhere, the
JSON is closed (an open string, a number or literal cut short, open arrays and objects) and
the top-level object gets an ``"error"`` member, the gateway's error: an SDK that raises on
a chunk with ``error`` (OpenAI's does) raises the gateway's error right there, and a reader
of raw SSE gets a whole event, then the gateway's own error event as on every other path.
Anything else (several data lines, another field, JSON that is not an object) is only
ended with its blank line.
"""

from __future__ import annotations

import json
from typing import Any

# The states of the container being filled (and of the top level before its value).
_KEY_OR_END, _KEY, _COLON, _VALUE, _VALUE_OR_END, _COMMA_OR_END = range(6)
_WHITESPACE = b" \t\r\n"


def ending(pending: bytes, error: dict[str, Any]) -> bytes:
    """What to send after ``pending`` (the partial event the client got, b"" between two
    events) so that it ends as a whole event; b"" when nothing is pending."""
    if not pending:
        return b""
    if pending.endswith((b"\n", b"\r")):
        return b"\n"  # its lines are whole: a blank line ends it
    start = pending.rfind(b"\n") + 1
    line = pending[start:]
    if not line.startswith(b"data:") or b"data:" in pending[:start]:
        return b"\n\n"
    value = line[5:]
    suffix = _close_json(value[1:] if value.startswith(b" ") else value, error)
    return (suffix if suffix is not None else b"") + b"\n\n"


def _close_json(text: bytes, error: dict[str, Any]) -> bytes | None:
    """The bytes that close ``text`` (a prefix of a JSON object) with an ``error`` member
    added at its top; None when it is not such a prefix."""
    member = b'"error":' + json.dumps(error, separators=(",", ":")).encode()
    if not text.strip(_WHITESPACE):
        return b"{" + member + b"}"
    stack: list[int] = []  # b"{" or b"[" of the open containers
    states: list[int] = []  # each open container's state
    in_string = escape = False
    hex_left = 0  # digits of a \\u escape still to come
    token = b""  # a number or literal being read
    key = False  # the open string is an object's key
    for byte in text:
        if in_string:
            if hex_left:
                hex_left -= 1
            elif escape:
                escape = False
                if byte == 0x75:  # u
                    hex_left = 4
            elif byte == 0x5C:  # backslash
                escape = True
            elif byte == 0x22:  # quote
                in_string = False
                if not stack:
                    return None  # a top-level string: not an object
                states[-1] = _COLON if key else _COMMA_OR_END
            continue
        char = bytes((byte,))
        if token:
            if char in b"0123456789+-.eEtrufalsn":
                token += char
                continue
            token = b""
            states[-1] = _COMMA_OR_END
        if char in _WHITESPACE:
            continue
        if not stack:
            if char != b"{":
                return None
            stack.append(byte)
            states.append(_KEY_OR_END)
            continue
        state = states[-1]
        if char == b'"':
            if state not in (_KEY_OR_END, _KEY, _VALUE, _VALUE_OR_END):
                return None
            in_string, key = True, state in (_KEY_OR_END, _KEY)
        elif char in b"{[":
            if state not in (_VALUE, _VALUE_OR_END):
                return None
            states[-1] = _COMMA_OR_END
            stack.append(byte)
            states.append(_KEY_OR_END if char == b"{" else _VALUE_OR_END)
        elif char in b"}]":
            if state not in (_KEY_OR_END, _VALUE_OR_END, _COMMA_OR_END) or stack[-1] != byte - 2:
                return None
            stack.pop()
            states.pop()
            if not stack:
                return None  # the object is whole already: nothing to add to
        elif char == b":":
            if state != _COLON:
                return None
            states[-1] = _VALUE
        elif char == b",":
            if state != _COMMA_OR_END:
                return None
            states[-1] = _KEY if stack[-1] == 0x7B else _VALUE
        elif char in b"-0123456789tfn" and state in (_VALUE, _VALUE_OR_END):
            token = char
        else:
            return None
    if not stack:
        return None
    out = bytearray()
    if in_string:
        out += _whole_utf8(text)
        if escape:
            out += b"n"
        out += b"0" * hex_left
        out += b'"'
        states[-1] = _COLON if key else _COMMA_OR_END
    elif token:
        out += _whole_token(token)
        states[-1] = _COMMA_OR_END
    while True:
        state = states.pop()
        top = not states
        if state == _COLON:
            out += b":null"
        elif state == _VALUE:
            out += b"null"
        elif state == _KEY and not top:
            out += b'"_":null'
        if top:
            if state in (_KEY_OR_END, _KEY):
                out += member
            else:
                out += b"," + member
            out += b"}"
            return bytes(out)
        out += b"}" if stack.pop() == 0x7B else b"]"


def _whole_token(token: bytes) -> bytes:
    for literal in (b"true", b"false", b"null"):
        if literal.startswith(token):
            return literal[len(token):]
    return b"0" if token[-1:] in b"+-.eE" else b""


def _whole_utf8(text: bytes) -> bytes:
    """Continuation bytes that complete a UTF-8 character cut at the end of ``text``."""
    for back in range(1, min(4, len(text)) + 1):
        byte = text[-back]
        if byte < 0x80:
            return b""
        if byte >= 0xC0:  # the lead byte: how many continuation bytes it wants
            need = 1 if byte < 0xE0 else 2 if byte < 0xF0 else 3
            missing = need - (back - 1)
            if missing <= 0:
                return b""
            # The second byte's range is narrower after E0, ED, F0 and F4.
            second = {0xE0: 0xA0, 0xED: 0x80, 0xF0: 0x90, 0xF4: 0x80}.get(byte, 0x80)
            first = bytes((second,)) if back == 1 else b"\x80"
            return first + b"\x80" * (missing - 1)
    return b""
