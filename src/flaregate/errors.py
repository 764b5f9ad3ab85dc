"""Gateway errors, rendered as OpenAI error JSON with the right status."""

from __future__ import annotations

from collections.abc import Mapping

from .http import Response, json_response


class GatewayError(Exception):
    """An error the client should see: ``{"error": {message, type, code, param}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def to_response(self) -> Response:
        return json_response(self.body(), self.status, self.headers)


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code="invalid_api_key")


def not_found(message: str, *, code: str = "not_found", param: str | None = None) -> GatewayError:
    return GatewayError(404, message, code=code, param=param)


def upstream_error(status: int, message: str, *, code: str = "upstream_error") -> GatewayError:
    return GatewayError(status, message, type="api_error", code=code)
