"""Who may call and what a request may carry: gateway keys and access, the admin credential
and API, request signing, privacy, input limits, CORS, the request gate, the security store, webhooks."""
