"""The annotation app over HTTP (FastAPI's test client): the JSON API, pages, validation, escaping, CSRF,
security headers. The real server, a real browser and kill -9 are in test_app_server.py and test_app_browser.py."""

import re

import pytest
from annotation_helpers import DISPLAY, human_project
from test_store import make_segment
from fastapi.testclient import TestClient
from polyfuse_feedback.access import issue_token
from polyfuse_feedback.app import create_app
from polyfuse_feedback.store import LabelStore


@pytest.fixture
def app_store(store_url):
    with LabelStore(store_url) as store:
        query_ids, people = human_project(store, comparisons=3, ratings=1)
        people["root"] = issue_token(store, "root", role="admin")
        app = create_app(store.database_url)
        with TestClient(app) as client:
            yield client, store, query_ids, people


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_annotate_through_the_api(app_store):
    client, store, query_ids, people = app_store
    assert client.get("/api/v1/projects", headers=bearer(people["ann"])).json() == [{"name": "run", "open": 4}]
    shown = client.get("/api/v1/projects/run/next", headers=bearer(people["ann"])).json()
    query = shown["query"]
    assert query["id"] == query_ids[2] and query["kind"] == "comparison"
    assert query["instructions"] == "Which answer is right?"
    assert query["answers"] == ["left", "right", "tie", "cant-tell"]
    first = query["segments"][0]
    assert first["images"]["image"]["still"].startswith("data:image/png;base64,")
    assert first["texts"]["question"] and len(first["actions"]) == 1 and first["numbers"]["features"]
    answered = client.post(f"/api/v1/projects/run/queries/{query['id']}/labels", headers=bearer(people["ann"]),
                           json={"answer": "right", "key": "abcdefgh-1"})
    assert answered.status_code == 201
    again = client.post(f"/api/v1/projects/run/queries/{query['id']}/labels", headers=bearer(people["ann"]),
                        json={"answer": "right", "key": "abcdefgh-1"})
    assert again.json() == answered.json()
    rating = client.post(f"/api/v1/projects/run/queries/{query_ids[3]}/labels", headers=bearer(people["bob"]),
                         json={"rating": 5, "key": "rating-key-1"})
    assert rating.status_code == 201
    assert [(r.annotator, r.preference, r.rating) for r in store.labels("run")] == [("ann", 1.0, None),
                                                                                      ("bob", None, 5)]
    skipped = client.post(f"/api/v1/projects/run/queries/{query_ids[1]}/skip", headers=bearer(people["ann"]))
    assert skipped.status_code == 204
    assert client.get("/api/v1/projects/run/next", headers=bearer(people["ann"])).json()["query"]["id"] == query_ids[0]
    progress = client.get("/api/v1/projects/run/progress", headers=bearer(people["root"])).json()
    assert progress["answered"] == 2 and {a["name"] for a in progress["annotators"]} == {"ann", "bob"}


@pytest.mark.parametrize("body, field", [
    ({"answer": "up", "key": "abcdefgh"}, "answer"),
    ({"answer": "left"}, "key"),
    ({"answer": "left", "key": "bad key!"}, "key"),
    ({"answer": "left", "rating": 3, "key": "abcdefgh"}, "either answer"),
    ({"rating": "five", "key": "abcdefgh"}, "rating"),
    ({"rating": 11, "key": "abcdefgh"}, "rating"),
    ({"answer": "left", "key": "abcdefgh", "extra": 1}, "extra"),
    ([1, 2], "body"),
])
def test_bad_bodies_are_422_naming_the_field(app_store, body, field):
    client, _, query_ids, people = app_store
    answer = client.post(f"/api/v1/projects/run/queries/{query_ids[0]}/labels", headers=bearer(people["ann"]), json=body)
    assert answer.status_code == 422 and field in answer.json()["detail"]


def test_unknown_ids_wrong_types_and_other_projects_are_4xx_never_500(app_store):
    client, store, query_ids, people = app_store
    other_ids, others = human_project(store, project="other", comparisons=1, people=("cat",))
    ok = {"answer": "left", "key": "abcdefgh"}
    cases = [
        client.post("/api/v1/projects/run/queries/999999/labels", headers=bearer(people["ann"]), json=ok),
        client.post("/api/v1/projects/run/queries/notanumber/labels", headers=bearer(people["ann"]), json=ok),
        client.post("/api/v1/projects/run/queries/-3/labels", headers=bearer(people["ann"]), json=ok),
        client.post(f"/api/v1/projects/run/queries/{10**30}/labels", headers=bearer(people["ann"]), json=ok),
        client.post(f"/api/v1/projects/run/queries/{other_ids[0]}/labels", headers=bearer(people["ann"]), json=ok),
        client.post(f"/api/v1/projects/other/queries/{other_ids[0]}/labels", headers=bearer(people["ann"]), json=ok),
        client.get("/api/v1/projects/other/next", headers=bearer(people["ann"])),
        client.get("/api/v1/projects/run/progress", headers=bearer(people["ann"])),
        client.get("/api/v1/projects/nope/progress", headers=bearer(people["root"])),
        client.post(f"/api/v1/projects/run/queries/{query_ids[0]}/labels", headers=bearer(people["ann"]),
                    content=b"{not json", ),
        client.post(f"/api/v1/projects/run/queries/{query_ids[3]}/labels", headers=bearer(people["ann"]), json=ok),
    ]
    assert [c.status_code for c in cases] == [404, 422, 422, 422, 404, 404, 404, 403, 404, 422, 422]
    assert all(c.json()["detail"] for c in cases)
    assert "compares two segments" not in cases[-1].json()["detail"] and "rating" in cases[-1].json()["detail"]
    assert store.labels("other") == [] and store.labels("run") == []


def test_missing_or_wrong_tokens_are_401(app_store):
    client, _, _, people = app_store
    for headers in ({}, bearer("pf_1_" + "x" * 43), {"Authorization": people["ann"]}, bearer("")):
        answer = client.get("/api/v1/projects", headers=headers)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    client.cookies.set("pf_session", people["ann"])
    assert client.get("/api/v1/projects").status_code == 401, "the API never takes the session cookie (CSRF)"


def test_oversized_bodies_are_413_before_they_are_read(app_store):
    client, _, query_ids, people = app_store
    big = {"answer": "left", "key": "abcdefgh", "pad": "x" * 100_000}
    answer = client.post(f"/api/v1/projects/run/queries/{query_ids[0]}/labels", headers=bearer(people["ann"]), json=big)
    assert answer.status_code == 413 and "larger than" in answer.json()["detail"]

    def chunks():
        for _ in range(20):
            yield b"x" * 10_000

    streamed = client.post(f"/api/v1/projects/run/queries/{query_ids[0]}/labels", headers=bearer(people["ann"]),
                           content=chunks())
    assert streamed.status_code == 413


def test_the_openapi_schema_documents_every_endpoint(app_store):
    client = app_store[0]
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["info"]["version"] == "1"
    prefix = "/api/v1/projects/{project}"
    assert set(schema["paths"]) == {"/api/v1/projects", *(prefix + path for path in (
        "/next", "/queries/{query_id}/labels", "/queries/{query_id}/skip", "/progress",  # annotators, admins
        "/segments", "/queries", "/queries/pending", "/queries/failed", "/labels", "/counts", "/settings",
        "/metrics"))}  # training runs
    for path in schema["paths"].values():
        for operation in path.values():
            assert operation.get("description") or operation.get("summary")


def login(client, token):
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client.post("/login", data={"token": token, "csrf": csrf}, follow_redirects=False)


def page_csrf(page):
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_pages_log_in_annotate_and_refuse_posts_without_csrf(app_store):
    client, store, query_ids, people = app_store
    assert client.get("/projects/run", follow_redirects=False).headers["location"] == "/login"
    bad = login(client, "pf_1_" + "x" * 43)
    assert bad.status_code == 401 and "not valid" in bad.text
    answer = login(client, people["ann"])
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = client.get("/projects/run")
    assert page.status_code == 200 and "Which answer is right?" in page.text and "data:image/png;base64," in page.text
    shown = int(re.search(r"/queries/(\d+)/answer", page.text).group(1))
    key = re.search(r'name="key" value="([^"]+)"', page.text).group(1)
    refused = client.post(f"/projects/run/queries/{shown}/answer", data={"choice": "left", "key": key, "csrf": "x"})
    assert refused.status_code == 403 and store.labels("run") == []
    posted = client.post(f"/projects/run/queries/{shown}/answer",
                         data={"choice": "left", "key": key, "csrf": page_csrf(page)}, follow_redirects=False)
    assert posted.status_code == 303 and [r.preference for r in store.labels("run")] == [0.0]
    assert client.post("/login", data={"token": people["ann"], "csrf": "forged"}).status_code == 403


def test_text_from_the_run_is_escaped_in_pages(app_store):
    client, store, _, people = app_store
    store.configure_project("run", instructions="<script>alert(1)</script> & <b>bold</b>")
    login(client, people["ann"])
    page = client.get("/projects/run")
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<b>bold</b>" not in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"


def test_the_admin_page_shows_progress_agreement_and_the_accuracy_plot(app_store):
    client, store, _, people = app_store
    store.record_metrics("run", 1, {"heldout_accuracy": 0.6, "labels": 10})
    store.record_metrics("run", 2, {"heldout_accuracy": 0.8, "labels": 20, "segment_env_return": 0.25})
    login(client, people["ann"])
    assert client.get("/admin").status_code == 403
    client.cookies.clear()
    login(client, people["root"])
    page = client.get("/admin")
    assert page.status_code == 200 and "held-out accuracy 0.800" in page.text and "recent mean return 0.250" in page.text
    plot = client.get("/admin/projects/run/progress.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    assert client.get("/admin/projects/nope/progress.png").status_code == 404


JUNK_PATH_VALUES = ["x", "-1", "0", "999999", "9" * 30, "%3Cscript%3E", "1.5", "run'--"]
JUNK_BODIES = [None, b"garbage", b"{}", b"[]", b'{"answer": 1, "key": null}', b'{"segments": "x"}',
               b'{"queries": [{"first": "a"}]}', b'{"ids": [1], "error": 5}', b'\xff\xfe']


def test_no_input_makes_any_api_endpoint_answer_500(app_store):
    """Every /api/v1 route, every method, junk in each path parameter and body: always a 4xx or a 2xx."""
    client, store, query_ids, people = app_store
    store.add_segments("run", [])
    admin = bearer(people["root"])
    schema = client.get("/api/v1/openapi.json").json()
    routes = [(path, method.upper()) for path, operations in schema["paths"].items() for method in operations]
    assert len(routes) >= 12
    statuses = set()
    for path, method in routes:
        for value in JUNK_PATH_VALUES:
            target = path.replace("{query_id}", value).replace("{project}", "run")
            for body in JUNK_BODIES if method in ("POST", "PUT") else [None]:
                answer = client.request(method, target, headers={**admin, "Content-Type": "application/json"},
                                        content=body, params={"ids": value})
                statuses.add(answer.status_code)
                assert answer.status_code < 500, (method, target, body, answer.text)
    assert {404, 422} <= statuses


def test_names_that_look_like_sql_are_data(app_store):
    client, store, _, people = app_store
    name = "run'; DROP TABLE labels; --"
    ids, tokens = human_project(store, project=name, comparisons=1, people=("eve",))
    quoted = name.replace("'", "%27").replace(";", "%3B").replace(" ", "%20")
    shown = client.get(f"/api/v1/projects/{quoted}/next", headers=bearer(tokens["eve"])).json()
    assert shown["query"]["id"] == ids[0]
    assert client.post(f"/api/v1/projects/{quoted}/queries/{ids[0]}/labels", headers=bearer(tokens["eve"]),
                       json={"answer": "tie", "key": "sql-looking"}).status_code == 201
    assert [r.preference for r in store.labels(name)] == [0.5] and store.labels("run") == []


def test_the_render_cache_serves_threads_that_evict_each_others_entries(app_store):
    """Many threads, a cache smaller than what they ask for: every answer complete, none a KeyError."""
    import threading

    from polyfuse_feedback.app.presenting import RenderedSegments

    _, store, _, _ = app_store
    ids = store.add_segments("run", [make_segment(s, length=1) for s in range(24)])
    cache, errors = RenderedSegments(store, size=4), []

    def ask(offset):
        try:
            for n in range(30):
                pair = [ids[(offset + n) % len(ids)], ids[(offset + 3 * n + 1) % len(ids)]]
                shown = cache.get(pair, DISPLAY)
                assert len(shown) == 2 and all(s["images"]["image"]["still"] for s in shown)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
