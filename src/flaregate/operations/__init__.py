"""The API operations, each a small spec on the one pipeline (``flaregate.pipeline``): what is
truly its own (body model, dialect of its errors and streams, usage vocabulary), nothing more."""
