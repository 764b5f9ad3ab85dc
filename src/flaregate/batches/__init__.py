"""The Files and Batches APIs: uploads kept per gateway key, and OpenAI-style batches the
gateway runs itself, line by line, through its one pipeline (docs/batches.md)."""
