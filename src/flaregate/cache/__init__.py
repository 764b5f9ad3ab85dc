"""The response cache: the key specification, the three tiers (hot: the in-process LRU;
warm: the Cache API / the local store's short table; cold: KV / the local store),
per-request controls, namespaces, single-flight, warming and the admin endpoints."""
