"""Input limits and header hygiene: what a request may carry, and what a response may say.

Body size is enforced by the host before the body is read (and again by the core); here:
JSON nesting depth, the number and length of chat messages, header count and size, and
the rule that no header leaves the gateway with a value it could not have sent safely
(control characters would split a header; non-Latin-1 text cannot be encoded).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import GatewayError, bad_request
from .settings import SecuritySettings

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}"
_HEADER_NAME = re.compile(_TOKEN)  # fullmatch: "$" would let a name end in a newline
_HEADER_NAMES = re.compile(rf"{_TOKEN}(?:\n{_TOKEN})*")  # names joined by newlines
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_HEADER_VALUE = 8192


def check_headers(headers: Mapping[str, str], limits: SecuritySettings) -> None:
    """431 when the request's headers are too many or too large."""
    if len(headers) > limits.max_header_count:
        raise GatewayError(431, f"Too many request headers (limit {limits.max_header_count}).",
                           code="request_header_fields_too_large")
    total = 0
    for name, value in headers.items():
        size = len(name) + len(value)
        total += size
        if len(value) > MAX_HEADER_VALUE:
            raise GatewayError(431, f"A request header is longer than {MAX_HEADER_VALUE} bytes.",
                               code="request_header_fields_too_large")
        if total > limits.max_header_bytes:
            raise GatewayError(431, f"Request headers exceed {limits.max_header_bytes} bytes in total.",
                               code="request_header_fields_too_large")


def parse_json(raw: bytes, max_depth: int) -> Any:
    """Parse a JSON body; 400 on bad JSON or nesting deeper than ``max_depth``."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("We could not parse the JSON body of your request.", code="invalid_json") from None
    except RecursionError:
        raise _too_deep(max_depth) from None
    if _depth_exceeds(value, max_depth):
        raise _too_deep(max_depth)
    return value


def _too_deep(limit: int) -> GatewayError:
    return bad_request(f"The JSON body is nested more than {limit} levels deep.", code="json_too_deep")


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:  # iterative: a deep document must not exhaust the interpreter's stack
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    total = 0
    stack = [content]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def check_chat(body: dict[str, Any], limits: SecuritySettings) -> None:
    """The number of messages and the length of each (validated body)."""
    messages = body.get("messages") or []
    if len(messages) > limits.max_messages:
        raise bad_request(f"Too many messages: {len(messages)} (limit {limits.max_messages}).",
                          param="messages", code="too_many_messages")
    for index, message in enumerate(messages):
        if _text_length(message.get("content")) > limits.max_message_chars:
            raise bad_request(f"Message {index} is longer than {limits.max_message_chars} characters.",
                              param=f"messages.{index}.content", code="message_too_long")


def safe_header_value(value: str) -> bool:
    if _UNSAFE_VALUE.search(value):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def sanitize_headers(headers: dict[str, str]) -> dict[str, str]:
    """Drop any header whose name or value could split or corrupt the header block."""
    # Nearly always every header is fine: then one check of all names and one of all
    # values says so, instead of three per header (every response passes here).
    try:
        values = "".join(headers.values())  # TypeError: a value that is not a str
    except TypeError:
        values = None
    names = "\n".join(headers)
    if (values is not None and names.count("\n") == len(headers) - 1  # no name holds the separator
            and _HEADER_NAMES.fullmatch(names) and safe_header_value(values)):
        return dict(headers)
    return {name: value for name, value in headers.items()
            if isinstance(value, str) and _HEADER_NAME.fullmatch(name) and safe_header_value(value)}
