"""What the semantic cache reads from a request: the last user message's text (what gets
embedded), and the body without that text (what the partition is made of, with everything
else the exact key is made of)."""

from __future__ import annotations

import copy
from typing import Any

PLACEHOLDER = "\u0000semantic-prompt"  # stands for the last user text in the partition's material
MAX_PROMPT_CHARS = 8192  # longer prompts are not matched semantically (exact cache only)


def _text_of(content: Any, part_type: str) -> str | None:
    """The content's text, or None when it holds anything but text (an image, a file...)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != part_type or not isinstance(part.get("text"), str):
                return None
            texts.append(part["text"])
        return "\n".join(texts)
    return None


def split_prompt(body: dict[str, Any], operation: str) -> tuple[str, dict[str, Any]] | None:
    """(the last user text, the body with it replaced by a placeholder), or None when the
    request has no such text to match on (then only the exact cache answers it)."""
    if operation == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        last = messages[-1]  # only a request whose last turn is the user's: else tools or the assistant speak
        if not isinstance(last, dict) or last.get("role") != "user":
            return None
        text = _text_of(last.get("content"), "text")
        if text is None or not text.strip() or len(text) > MAX_PROMPT_CHARS:
            return None
        rest = dict(body)
        rest["messages"] = [*messages[:-1], {**last, "content": PLACEHOLDER}]
        return text, rest
    if operation == "responses":
        value = body.get("input")
        if isinstance(value, str):
            if not value.strip() or len(value) > MAX_PROMPT_CHARS:
                return None
            return value, {**body, "input": PLACEHOLDER}
        if isinstance(value, list) and value:
            last = value[-1]
            if not isinstance(last, dict) or last.get("role") != "user":
                return None
            text = _text_of(last.get("content"), "input_text")
            if text is None or not text.strip() or len(text) > MAX_PROMPT_CHARS:
                return None
            rest = copy.copy(body)
            rest["input"] = [*value[:-1], {**last, "content": PLACEHOLDER}]
            return text, rest
    return None


def has_tool_calls(completion: dict[str, Any]) -> bool:
    """Whether an answer calls a tool (chat's ``tool_calls`` / ``function_call``, a
    Responses ``function_call`` item): such answers are never reused semantically."""
    choices = completion.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and (message.get("tool_calls") or message.get("function_call")):
                return True
            if isinstance(choice, dict) and choice.get("finish_reason") in ("tool_calls", "function_call"):
                return True
    output = completion.get("output")
    if isinstance(output, list):
        return any(isinstance(item, dict) and str(item.get("type", "")).endswith("_call") for item in output)
    return False
