"""The gateway-overhead benchmark (see bench/cli.py); not part of the installed package."""
