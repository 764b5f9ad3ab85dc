"""The one request pipeline: a typed context (``context.py``) taken through the stages
(``runner.py``) by every API operation, each a small declared spec (``spec.py``; the specs
themselves are in ``flaregate.operations``). A new surface is a spec, never a copy of the path."""
