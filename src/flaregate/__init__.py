"""Flaregate: an OpenAI-compatible AI gateway with one host-agnostic core.

The core (everything outside ``flaregate.hosts``) does no I/O of its own: it talks to the
world through the small protocols in :mod:`flaregate.ports`, which each host provides.
"""

__version__ = "0.1.0"
