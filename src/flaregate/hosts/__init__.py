"""Host adapters, one folder per runtime, each the same shape: ports + request/response glue."""
