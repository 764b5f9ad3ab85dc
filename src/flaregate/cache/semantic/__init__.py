"""The semantic cache: a paraphrase of an answered prompt is a hit, a near miss is not
(docs/cache.md, "Semantic cache")."""
