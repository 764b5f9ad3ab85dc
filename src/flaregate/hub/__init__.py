"""The metrics hub: one aggregator per deployment (a Durable Object on the edge, an in-process
object locally; the hosts wrap it) that receives every request's analytics event, keeps the
metrics and the request-log store in SQL, and pushes live metrics and events to subscribers."""
