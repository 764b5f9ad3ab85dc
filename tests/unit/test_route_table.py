"""The route table: exact and template matches, 404/405, refused declarations, the listing,
OpenAPI; and each package's declared routes answering as its old ``route()`` did."""

import json
from dataclasses import replace

import pytest
from pydantic import BaseModel

from flaregate.cache.admin import CacheAdmin
from flaregate.errors import GatewayError
from flaregate.http import Headers, Request, Response, json_response
from flaregate.ratelimits.admin import PREFIX as LIMITS_PREFIX
from flaregate.ratelimits.admin import RateLimitAdmin
from flaregate.routes import SEGMENT, Route, RouteTable, package_routes
from flaregate.security.keys import key_id
from tests.support.security import ADMIN_KEY, CONFIG_KEY, SecureRig


def answer(name):
    async def handler(request, out):
        return json_response({"handler": name, "params": dict(request.params)})
    return handler


class Body(BaseModel):
    model: str
    n: int = 1


def table():
    return RouteTable([
        Route("/v1/things", {"POST": answer("create")}, "key", "Make a thing", api=True, body=Body),
        Route("/v1/things/{thing_id}", {"GET": answer("get"), "DELETE": answer("delete")}, "key", "One thing",
              api=True),
        Route("/v1/things/{thing_id}/parts/{part}", {"GET": answer("part")}, "key", "A part"),
        Route("/health", {"GET": answer("health")}, "public", "Liveness", api=True),
        Route("/admin/things", {"GET": answer("admin"), "POST": answer("admin-post")}, "admin", "Admin"),
    ])


def refusal(call) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        call()
    return caught.value


def test_an_exact_path_is_a_dict_hit_with_no_params():
    route, handler, params = table().match("POST", "/v1/things")
    assert route.path == "/v1/things" and route.access == "key" and dict(params) == {}
    assert handler is route.methods["POST"]


def test_a_template_hands_over_its_params():
    routes = table()
    route, handler, params = routes.match("DELETE", "/v1/things/th_1.a:b-c")
    assert route.path == "/v1/things/{thing_id}" and params == {"thing_id": "th_1.a:b-c"}
    assert handler is route.methods["DELETE"]
    _, _, params = routes.match("GET", "/v1/things/a/parts/b")
    assert params == {"thing_id": "a", "part": "b"}
    assert route.params == ("thing_id",)


async def test_the_handler_reads_the_params_from_the_request():
    _, handler, params = table().match("GET", "/v1/things/t7")
    response = await handler(replace(Request("GET", "/v1/things/t7"), params=params), {})
    assert json.loads(response.body) == {"handler": "get", "params": {"thing_id": "t7"}}


def test_a_request_has_no_params_by_default():
    assert dict(Request("GET", "/").params) == {}


@pytest.mark.parametrize("path", [
    "/nowhere", "/v1/things/", "/v1/things/a/b", "/v1/things/" + "x" * 129, "/v1/things/a%2Fb",
    "/v1/things/a b", "/v1/thingsx", "/V1/things", "", "/v1/things/a/parts/",
])
def test_unknown_paths_get_a_404(path):
    error = refusal(lambda: table().match("GET", path))
    assert (error.status, error.code) == (404, "unknown_url")


def test_the_404_redacts_and_truncates_the_path():
    secret = "sk-" + "a" * 40
    error = refusal(lambda: table().match("GET", f"/v1/{secret}"))
    assert secret not in error.message and "[redacted]" in error.message
    error = refusal(lambda: table().match("GET", "/" + "y" * 5000))
    assert error.message == f"Unknown path /{'y' * 199}."


def test_a_segment_is_the_documented_pattern():
    assert SEGMENT == "[A-Za-z0-9_.:-]{1,128}"
    assert table().match("GET", "/v1/things/" + "x" * 128)[2]["thing_id"] == "x" * 128


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/things", "POST"),
    ("POST", "/v1/things/abc", "DELETE, GET"),
    ("PUT", "/admin/things", "GET, POST"),
    ("POST", "/health", "GET"),
])
def test_a_wrong_method_gets_a_405_with_allow(method, path, allow):
    error = refusal(lambda: table().match(method, path))
    assert (error.status, error.code, error.headers) == (405, "method_not_allowed", {"allow": allow})
    assert "abc" not in error.message  # the template is named, not the client's path


@pytest.mark.parametrize("paths", [
    ("/a", "/a"),
    ("/a/{x}", "/a/{y}"),
    ("/a/{x}", "/a/b"),
    ("/a/b", "/a/{x}"),
    ("/a/{x}/c", "/a/b/{y}"),
    ("/{x}", "/health"),
])
def test_duplicates_and_shadowing_templates_are_refused(paths):
    with pytest.raises(ValueError):
        RouteTable(Route(p, {"GET": answer(p)}, "public", p) for p in paths)


@pytest.mark.parametrize("paths", [
    ("/a", "/a/{x}", "/a/{x}/c", "/a/{x}/d"),
    ("/a/{x}", "/b/{x}"),
    ("/a/{x}", "/a/~b"),  # "~" is no parameter character: no path matches both
])
def test_templates_that_cannot_overlap_are_accepted(paths):
    assert len(RouteTable(Route(p, {"GET": answer(p)}, "public", p) for p in paths)) == len(paths)


@pytest.mark.parametrize(("path", "methods", "access"), [
    ("no-slash", {"GET"}, "public"),
    ("/a/x{y}", {"GET"}, "public"),
    ("/a/{x}/{x}", {"GET"}, "public"),
    ("/a/{1x}", {"GET"}, "public"),
    ("/a", set(), "public"),
    ("/a", {"get"}, "public"),
    ("/a", {"GET"}, "everyone"),
])
def test_malformed_routes_are_refused(path, methods, access):
    with pytest.raises(ValueError):
        Route(path, {m: answer(m) for m in methods}, access, "x")


def test_a_route_is_immutable():
    route = Route("/a", {"GET": answer("a")}, "public", "x")
    with pytest.raises(TypeError):
        route.methods["POST"] = answer("b")  # type: ignore[index]
    with pytest.raises(AttributeError):
        route.path = "/b"  # type: ignore[misc]


def test_the_listing_shows_every_route():
    routes = table()
    text = routes.listing()
    lines = text.splitlines()
    assert lines[0].split() == ["PATH", "METHODS", "ACCESS", "API", "SUMMARY"]
    assert len(lines) == 1 + len(routes)
    for route in routes:
        [line] = [line for line in lines if line.split()[0] == route.path]
        assert " ".join(sorted(route.methods)) in line and route.access in line and line.endswith(route.summary)
        assert (" api " in line) == route.api


def test_openapi_documents_the_api_routes():
    doc = table().openapi("1.2.3")
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == "1.2.3"
    assert set(doc["paths"]) == {"/v1/things", "/v1/things/{thing_id}", "/health"}
    assert set(doc["paths"]["/v1/things/{thing_id}"]) == {"get", "delete"}
    create = doc["paths"]["/v1/things"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    name = schema["$ref"].removeprefix("#/components/schemas/")
    body = doc["components"]["schemas"][name]
    assert body["required"] == ["model"] and set(body["properties"]) == {"model", "n"}
    [param] = doc["paths"]["/v1/things/{thing_id}"]["get"]["parameters"]
    assert param["name"] == "thing_id" and param["in"] == "path" and param["required"] is True
    assert "requestBody" not in doc["paths"]["/v1/things/{thing_id}"]["get"]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}] and doc["paths"]["/health"]["get"]["security"] == []
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    json.dumps(doc)  # serialisable as /openapi.json


# -- the packages' routes --------------------------------------------------------------------

def admin_request(method, path, body=None, key=ADMIN_KEY, query=None):
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    return Request(method, path, Headers(headers), raw, query or {}, client_ip="203.0.113.9")


async def run(handler, request) -> tuple[int, object, dict[str, str]]:
    try:
        response: Response = await handler(request, {})
    except GatewayError as exc:
        response = exc.to_response()
    body = response.body
    assert isinstance(body, bytes)
    parsed = json.loads(body) if response.headers.get("content-type") == "application/json" else body
    return response.status, parsed, response.headers


async def through_table(routes: RouteTable, request: Request):
    try:
        _, handler, params = routes.match(request.method, request.path)
    except GatewayError as exc:
        refused = exc.to_response()
        return refused.status, json.loads(refused.body), refused.headers
    return await run(handler, replace(request, params=params))


def concrete(path: str) -> str:
    return path.replace("{", "").replace("}", "")  # {key_id} -> key_id: a valid segment


def objects(rig: SecureRig):
    gateway = rig.gateway
    return {"admin": gateway.admin_api, "limits": RateLimitAdmin(rig.settings, gateway.ratelimits),
            "observability": gateway.observability, "warming": gateway.cache_warming,
            "cache": CacheAdmin(gateway.caching)}


def test_every_declared_route_answers_a_wrong_method_with_405():
    rig = SecureRig()
    gateway_table = getattr(rig.gateway, "routes", None)
    routes = gateway_table if isinstance(gateway_table, RouteTable) else RouteTable(package_routes(rig.gateway))
    declared = list(routes)
    assert {"/admin/keys/{key_id}", "/admin/ratelimits/{key_id}", "/v1/logs/{request_id}",
            "/admin/cache/warm/{job_id}", "/admin/cache/purge", "/metrics"} <= {r.path for r in declared}
    for route in declared:
        wrong = next(m for m in ("PATCH", "PUT", "DELETE", "POST") if m not in route.methods)
        error = refusal(lambda route=route, wrong=wrong: routes.match(wrong, concrete(route.path)))
        assert (error.status, error.headers["allow"]) == (405, ", ".join(sorted(route.methods))), route.path
        for method in route.methods:
            assert routes.match(method, concrete(route.path))[0] is route


def test_the_packages_declare_these_routes():
    rig = SecureRig()
    declared = {name: {(r.path, tuple(sorted(r.methods)), r.access) for r in obj.routes()}
                for name, obj in objects(rig).items()}
    assert declared == {
        "admin": {("/admin/keys", ("GET", "POST"), "admin"),
                  ("/admin/keys/{key_id}", ("DELETE", "GET", "PATCH"), "admin"),
                  ("/admin/keys/{key_id}/rotate", ("POST",), "admin"),
                  ("/admin/credentials", ("GET", "POST"), "admin"),
                  ("/admin/credentials/{credential_id}", ("DELETE",), "admin"),
                  ("/admin/audit", ("GET",), "admin"),
                  ("/admin/teams", ("GET", "POST"), "admin"),
                  ("/admin/teams/{team_id}", ("DELETE", "GET", "PATCH"), "admin"),
                  ("/admin/webhooks", ("GET", "POST"), "admin"),
                  ("/admin/webhooks/{hook_id}", ("DELETE",), "admin"),
                  ("/admin/webhooks/{hook_id}/deliveries", ("GET",), "admin"),
                  ("/admin/webhooks/{hook_id}/test", ("POST",), "admin")},
        "limits": {("/admin/ratelimits/{key_id}", ("DELETE", "GET"), "admin"),
                   ("/admin/teams/{team_id}/usage", ("GET",), "admin"),
                   ("/admin/ratelimits/{key_id}/{rest}", ("DELETE", "GET"), "admin")},
        "observability": {("/metrics", ("GET",), "observer"), ("/v1/analytics", ("GET",), "observer"),
                          ("/dashboard", ("GET",), "public"), ("/dashboard/{file}", ("GET",), "public"),
                          ("/v1/logs", ("GET",), "observer"),
                          ("/v1/logs/{request_id}", ("GET",), "observer")},
        "warming": {("/admin/cache/warm", ("POST",), "admin"), ("/admin/cache/warm/{job_id}", ("GET",), "admin")},
        "cache": {("/admin/cache/purge", ("POST",), "admin"), ("/admin/cache/stats", ("GET",), "admin")},
    }
    RouteTable(r for obj in objects(rig).values() for r in obj.routes())  # no overlaps between packages


def comparable(result):
    status, body, headers = result
    if isinstance(body, dict) and "error" in body:
        allow = headers.get("allow")  # the table lists the methods sorted
        return status, body["error"]["code"], sorted(allow.split(", ")) if allow else None
    return status, body


ADMIN_SAMPLES = [
    ("GET", "/admin/keys", None, ADMIN_KEY),
    ("GET", "/admin/keys", None, None),
    ("GET", "/admin/keys", None, CONFIG_KEY),
    ("PUT", "/admin/keys", None, ADMIN_KEY),
    ("POST", "/admin/keys", {"expires_in_seconds": 0}, ADMIN_KEY),
    ("GET", "/admin/keys/key_nope", None, ADMIN_KEY),
    ("DELETE", "/admin/keys/key_nope", None, ADMIN_KEY),
    ("POST", "/admin/keys/key_nope", None, ADMIN_KEY),
    ("GET", "/admin/webhooks", None, ADMIN_KEY),
    ("POST", "/admin/webhooks", {"url": "http://127.0.0.1/x"}, ADMIN_KEY),
    ("DELETE", "/admin/webhooks/wh_nope", None, ADMIN_KEY),
    ("GET", "/admin/webhooks/wh_nope/deliveries", None, ADMIN_KEY),
    ("POST", "/admin/webhooks/wh_nope/test", None, ADMIN_KEY),
    ("GET", "/admin/webhooks/wh_nope/test", None, ADMIN_KEY),
]


@pytest.mark.parametrize(("method", "path", "body", "key"), ADMIN_SAMPLES)
async def test_the_admin_api_routes_answer_as_its_route_did(method, path, body, key):
    rig = SecureRig()
    api = rig.gateway.admin_api
    request = admin_request(method, path, body, key)
    old = api.route(request)
    assert old is not None
    expected = comparable(await run(old, request))
    assert comparable(await through_table(RouteTable(api.routes()), request)) == expected


async def test_admin_ids_outside_the_old_pattern_are_still_unknown_paths():
    rig = SecureRig()
    api = rig.gateway.admin_api
    for path in ("/admin/keys/a.b", "/admin/keys/" + "k" * 65, "/admin/webhooks/a:b/test"):
        request = admin_request("GET" if "test" not in path else "POST", path, key=None)
        assert api.route(request) is None or (await run(api.route(request), request))[0] == 404
        status, body, _ = await through_table(RouteTable(api.routes()), request)
        assert (status, body["error"]["code"]) == (404, "unknown_url")  # before any admin check


async def test_the_admin_api_still_needs_a_store():
    rig = SecureRig()
    api = rig.gateway.admin_api
    api._store = None
    status, body, _ = await through_table(RouteTable(api.routes()), admin_request("GET", "/admin/keys"))
    assert (status, body["error"]["code"]) == (501, "admin_unavailable")


async def test_the_admin_api_creates_a_key_through_the_table():
    rig = SecureRig()
    routes = RouteTable(rig.gateway.admin_api.routes())
    status, created, _ = await through_table(routes, admin_request("POST", "/admin/keys", {"name": "t"}))
    assert status == 201 and created["name"] == "t"
    status, record, _ = await through_table(routes, admin_request("GET", f"/admin/keys/{created['id']}"))
    assert status == 200 and record["id"] == created["id"]


LIMITS_GOOD = LIMITS_PREFIX + key_id(CONFIG_KEY)
LIMITS_SAMPLES = [  # (method, path, query, key) -> (status, error code or None)
    ("GET", LIMITS_GOOD, None, ADMIN_KEY, 200, None),
    ("GET", LIMITS_GOOD, None, None, 401, "invalid_admin_key"),
    ("DELETE", LIMITS_GOOD, None, ADMIN_KEY, 200, None),
    ("DELETE", LIMITS_GOOD, {"policy": "a|b"}, ADMIN_KEY, 400, "invalid_value"),
    ("DELETE", LIMITS_GOOD, {"policy": "default"}, ADMIN_KEY, 200, None),
    ("POST", LIMITS_GOOD, None, ADMIN_KEY, 405, "method_not_allowed"),
    ("GET", LIMITS_PREFIX + "key_nothex", None, ADMIN_KEY, 404, "invalid_key_id"),
    ("GET", LIMITS_GOOD + "/x", None, ADMIN_KEY, 404, "invalid_key_id"),  # more after the id: still not a key id
]


@pytest.mark.parametrize(("method", "path", "query", "key", "status", "code"), LIMITS_SAMPLES)
async def test_the_ratelimit_admin_routes(method, path, query, key, status, code):
    rig = SecureRig()
    limits = RateLimitAdmin(rig.settings, rig.gateway.ratelimits)
    request = admin_request(method, path, key=key, query=query)
    got_status, body, _ = await through_table(RouteTable(limits.routes()), request)
    assert got_status == status
    assert (body["error"]["code"] if code else None) == code


OBSERVABILITY_SAMPLES = [
    ("GET", "/metrics", None, ADMIN_KEY),
    ("GET", "/metrics", None, None),
    ("GET", "/v1/analytics", None, ADMIN_KEY),
    ("GET", "/v1/analytics", {"window": "2h"}, ADMIN_KEY),
    ("GET", "/v1/analytics", {"group_by": "model"}, ADMIN_KEY),
    ("GET", "/v1/analytics", {"token": ADMIN_KEY}, None),
    ("GET", "/dashboard", None, None),
    ("GET", "/v1/logs", None, ADMIN_KEY),
    ("GET", "/v1/logs", None, CONFIG_KEY),
    ("GET", "/v1/logs/req_nothing_here", None, ADMIN_KEY),
    ("GET", "/v1/logs/req_nothing_here", None, None),
]


@pytest.mark.parametrize(("method", "path", "query", "key"), OBSERVABILITY_SAMPLES)
async def test_the_observability_routes_answer_as_its_routes_did(method, path, query, key):
    rig = SecureRig()
    observability = rig.gateway.observability
    declared = observability.routes()
    request = admin_request(method, path, key=key, query=query)
    old = (dict(declared).get((method, path))  # the old {(method, path): handler} of the exact paths
           or observability.route(request))
    assert old is not None
    expected = comparable(await run(old, request))
    assert comparable(await through_table(RouteTable(declared), request)) == expected


WARMING_SAMPLES = [
    ("POST", "/admin/cache/warm", {"requests": []}, ADMIN_KEY),
    ("POST", "/admin/cache/warm", {"key_id": "key_nope", "requests": [{"model": "mock-1"}]}, ADMIN_KEY),
    ("POST", "/admin/cache/warm", None, None),
    ("GET", "/admin/cache/warm", None, ADMIN_KEY),
    ("GET", "/admin/cache/warm/warm_0123456789abcdef", None, ADMIN_KEY),
    ("GET", "/admin/cache/warm/nope", None, ADMIN_KEY),
    ("GET", "/admin/cache/warm/warm_x", None, None),
    ("POST", "/admin/cache/warm/warm_x", None, ADMIN_KEY),
]


@pytest.mark.parametrize(("method", "path", "body", "key"), WARMING_SAMPLES)
async def test_the_cache_warming_routes_answer_as_its_route_did(method, path, body, key):
    rig = SecureRig()
    warming = rig.gateway.cache_warming
    request = admin_request(method, path, body, key)
    old = warming.route(request)
    assert old is not None
    expected = comparable(await run(old, request))
    assert comparable(await through_table(RouteTable(warming.routes()), request)) == expected


async def test_a_started_warm_job_is_read_back_through_the_template():
    rig = SecureRig()
    routes = RouteTable(rig.gateway.cache_warming.routes())
    job = {"key": CONFIG_KEY, "requests": [{"model": "mock-1", "messages": [{"role": "user", "content": "x"}]}]}
    status, started, _ = await through_table(routes, admin_request("POST", "/admin/cache/warm", job))
    assert status == 202
    await rig.tasks.drain()
    status, state, _ = await through_table(routes, admin_request("GET", started["url"]))
    assert status == 200 and state["id"] == started["id"] and state["status"] == "completed"


CACHE_SAMPLES = [
    ("POST", "/admin/cache/purge", {"key": "0" * 64}, ADMIN_KEY),
    ("POST", "/admin/cache/purge", {"namespace": "a b"}, ADMIN_KEY),
    ("POST", "/admin/cache/purge", {"key": "abc"}, ADMIN_KEY),
    ("POST", "/admin/cache/purge", {}, None),
    ("GET", "/admin/cache/stats", None, ADMIN_KEY),
    ("GET", "/admin/cache/stats", None, CONFIG_KEY),
]


@pytest.mark.parametrize(("method", "path", "body", "key"), CACHE_SAMPLES)
async def test_the_cache_admin_routes_answer_as_its_handlers_did(method, path, body, key):
    rig = SecureRig()
    cache = CacheAdmin(rig.gateway.caching)
    old = {("POST", "/admin/cache/purge"): cache.purge, ("GET", "/admin/cache/stats"): cache.stats}
    request = admin_request(method, path, body, key)
    expected = comparable(await run(old[(method, path)], request))
    assert comparable(await through_table(RouteTable(cache.routes()), request)) == expected
    error = refusal(lambda: RouteTable(cache.routes()).match("GET", "/admin/cache/purge"))
    assert (error.status, error.headers) == (405, {"allow": "POST"})


def test_python_m_flaregate_routes_prints_the_table(capsys):
    from flaregate.routes import main

    main()
    out = capsys.readouterr().out
    for path in ("/admin/keys/{key_id}", "/admin/ratelimits/{key_id}", "/metrics", "/v1/logs/{request_id}",
                 "/admin/cache/warm/{job_id}", "/admin/cache/purge", "/admin/cache/stats"):
        assert path in out
