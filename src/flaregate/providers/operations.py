"""How a provider reaches an operation: natively when it serves it, else by a translation
this package owns (Messages and Responses over chat), else not at all. The one place that
answers it: routing asks here, operations only name what they need."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .base import CHAT, MESSAGES, RESPONSES
from .messages_over_chat import messages_over_chat
from .responses_over_chat import responses_sender


def sender_for(provider: Any, operation: str) -> Callable[..., Any] | None:
    """``send(body, model, forward_headers, *, timeout)`` for ``operation`` on ``provider``, or None."""
    operations = getattr(provider, "operations", {CHAT})
    if operation == RESPONSES:  # pass-through where served, else over chat
        return responses_sender(provider, operations)
    if operation in operations:
        return getattr(provider, operation)
    if operation == MESSAGES and CHAT in operations:  # Messages clients, any chat provider
        return functools.partial(messages_over_chat, provider)
    return None


def serves(provider: Any, operation: str) -> bool:
    return sender_for(provider, operation) is not None
