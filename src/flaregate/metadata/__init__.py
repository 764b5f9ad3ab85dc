"""Request metadata: the tags a request carries (``x-flaregate-metadata`` and its key's defaults)."""

from .tags import MAX_TAGS, METADATA_HEADER, parse_tags, request_tags

__all__ = ["MAX_TAGS", "METADATA_HEADER", "parse_tags", "request_tags"]
