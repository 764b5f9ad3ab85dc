"""OpenAI's Responses API (``POST /v1/responses``) served through the chat flow's steps.

``translate``: a Responses body as a chat body, a chat answer (JSON or SSE) as a Responses
one; ``conversations``: the stored turns ``previous_response_id`` refers to; ``endpoint``:
the route itself (pass-through to OpenAI-kind providers, translation for the others).
"""
