"""The three rate-limit algorithms as pure functions over small state records: the token
bucket, the sliding log and the fixed window (the limiter object stores their state)."""
