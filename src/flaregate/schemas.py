"""Request models: validated enough to route and cache, permissive enough to pass through.

Unknown fields are kept (``extra="allow"``) and forwarded to the provider unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from .errors import GatewayError, bad_request


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[Any] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False


def validation_error(exc: ValidationError) -> GatewayError:
    """The first problem pydantic found, as an OpenAI-style 400 naming the parameter."""
    err = exc.errors(include_url=False)[0]
    param = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {err['msg']}."
    return bad_request(message, param=param, code="missing_required_parameter" if err["type"] == "missing" else "invalid_value")
