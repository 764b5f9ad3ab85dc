// A bare proxy: POST the body to UPSTREAM_URL + the request's path, return the answer as is.
// FLOOR_OPS adds the same operations as ../edge_floor/entry.py, in JavaScript ("do" calls a
// JavaScript Durable Object), so each one's price with and without Python can be compared.
import { DurableObject } from "cloudflare:workers";

const LOG_LINE = JSON.stringify({ level: "info", logger: "flaregate.access", msg: "request", status: 200,
  request_id: "req_0123456789abcdef01234567", trace_id: "0".repeat(32), model: "bench-model",
  provider: "mock-upstream", key_id: "key_0123456789abcdef", cache: "MISS", latency_ms: 1.5,
  upstream_ms: 1.0, overhead_ms: 0.5, client_ip: "127.0.0.0", stream: false, tokens_in: 12, tokens_out: 20 });

export class Counter extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS c (k TEXT PRIMARY KEY, n INTEGER)");
  }
  bump(payload) {
    this.ctx.storage.sql.exec("INSERT INTO c VALUES ('k', 1) ON CONFLICT(k) DO UPDATE SET n = n + 1");
    return payload;
  }
}

export default {
  async fetch(request, env, ctx) {
    if (request.method !== "POST") return new Response("ok");
    const ops = (env.FLOOR_OPS || "").split(",");
    if (ops.includes("do")) await env.COUNTER.getByName("partition").bump("{}");
    if (ops.includes("cache")) await caches.default.match("https://floor.internal/cache/key");
    if (ops.includes("kv")) await env.CACHE.get("floor-key");
    const upstream = await fetch(env.UPSTREAM_URL + new URL(request.url).pathname, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer " + env.UPSTREAM_KEY },
      body: await request.text(),
    });
    if (ops.includes("log")) console.info(LOG_LINE);
    if (ops.includes("cacheput")) {
      const entry = new Response(LOG_LINE + LOG_LINE, {
        headers: { "content-type": "application/json", "cache-control": "max-age=300" } });
      ctx.waitUntil(caches.default.put("https://floor.internal/cache/" + crypto.randomUUID(), entry));
    }
    return new Response(upstream.body, {
      status: upstream.status,
      headers: { "content-type": upstream.headers.get("content-type") || "application/json" },
    });
  },
};
