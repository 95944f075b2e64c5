"""Serving queries to people: priority order, one person per query unless measuring agreement, leases,
skips, idempotent answers, project scope, tokens; agreement maths."""

import time

import pytest
from annotation_helpers import human_project, principal
from polyfuse.feedback import Label
from polyfuse_feedback.access import authenticate, issue_token, revoke_tokens
from polyfuse_feedback.agreement import cohen_kappa, fleiss_kappa
from polyfuse_feedback.annotation import AnnotationQueue, NotFound
from polyfuse_feedback.schema import tokens
from polyfuse_feedback.store import LabelStore, NewQuery, StoreError
from test_store import make_segment


@pytest.fixture
def store(store_url):
    with LabelStore(store_url) as opened:
        yield opened


def test_queries_are_served_highest_priority_first_and_never_to_two_people(store):
    query_ids, people = human_project(store, comparisons=4)
    queue = AnnotationQueue(store)
    ann, bob = principal(store, people["ann"]), principal(store, people["bob"])
    first = queue.next(ann, "run")
    assert first.query_id == query_ids[3]  # priority 3
    assert queue.next(ann, "run").query_id == query_ids[3], "a reloaded page shows the held query again"
    assert queue.next(bob, "run").query_id == query_ids[2]
    queue.submit(ann, "run", first.query_id, Label(preference=1.0), "key-0001")
    assert queue.next(ann, "run").query_id == query_ids[1]
    assert queue.next(bob, "run").query_id == query_ids[2]
    [label] = store.labels("run")
    assert (label.annotator, label.source, label.preference) == ("ann", "human", 1.0)


def test_only_the_sources_own_queries_are_served(store):
    query_ids, people = human_project(store, comparisons=1)
    first, second = store.add_segments("run", [make_segment(8), make_segment(9)])
    (other,) = store.post_queries("run", [NewQuery(first, second, priority=99.0, source="synthetic")])
    assert AnnotationQueue(store).next(principal(store, people["ann"]), "run").query_id == query_ids[0] != other


def test_an_expired_lease_gives_the_query_to_someone_else(store):
    query_ids, people = human_project(store, comparisons=1)
    queue = AnnotationQueue(store, lease_s=0.2)
    ann, bob = principal(store, people["ann"]), principal(store, people["bob"])
    assert queue.next(ann, "run").query_id == query_ids[0]
    assert queue.next(bob, "run") is None
    time.sleep(0.3)
    assert queue.next(bob, "run").query_id == query_ids[0]


def test_a_skipped_query_goes_to_others_and_never_back(store):
    query_ids, people = human_project(store, comparisons=2)
    queue = AnnotationQueue(store)
    ann, bob = principal(store, people["ann"]), principal(store, people["bob"])
    held = queue.next(ann, "run").query_id
    queue.skip(ann, "run", held)
    assert queue.next(ann, "run").query_id != held
    assert queue.next(bob, "run").query_id == held


def test_overlap_shows_a_share_of_queries_to_two_people_and_kappa_is_reported(store):
    query_ids, people = human_project(store, comparisons=40, overlap=0.5)
    queue = AnnotationQueue(store)
    ann, bob = principal(store, people["ann"]), principal(store, people["bob"])
    answered = {"ann": [], "bob": []}
    for name, person in (("ann", ann), ("bob", bob)) * 40:
        held = queue.next(person, "run")
        if held is not None:
            answer = Label(preference=1.0 if name == "ann" or held.query_id % 3 else 0.0)  # bob differs on 1 in 3
            queue.submit(person, "run", held.query_id, answer, f"k{held.query_id:08d}")
            answered[name].append(held.query_id)
    both = set(answered["ann"]) & set(answered["bob"])
    assert set(answered["ann"]) | set(answered["bob"]) == set(query_ids)
    assert 10 <= len(both) <= 30, "about half the queries are answered twice"
    progress = queue.progress("run")
    assert progress.overlapping == len(both)
    assert progress.open == 0 and progress.answered == 40
    assert {a.name: a.labels for a in progress.annotators} == {k: len(v) for k, v in answered.items()}
    assert progress.fleiss_kappa is not None and progress.cohen_kappa[("ann", "bob")] is not None
    pairs = [("p1.0", "p1.0" if q % 3 else "p0.0") for q in sorted(both)]
    assert progress.cohen_kappa[("ann", "bob")] == pytest.approx(cohen_kappa(pairs))


def test_answers_are_idempotent_per_key_and_annotator(store):
    query_ids, people = human_project(store, comparisons=1, overlap=1.0)
    queue = AnnotationQueue(store)
    ann, bob = principal(store, people["ann"]), principal(store, people["bob"])
    first = queue.submit(ann, "run", query_ids[0], Label(preference=0.0), "same-key-1")
    assert queue.submit(ann, "run", query_ids[0], Label(preference=1.0), "same-key-1") == first
    assert queue.submit(bob, "run", query_ids[0], Label(preference=1.0), "same-key-1") != first
    assert [(r.annotator, r.preference) for r in store.labels("run")] == [("ann", 0.0), ("bob", 1.0)]


def test_cant_tell_ratings_and_wrong_answers(store):
    query_ids, people = human_project(store, comparisons=1, ratings=1)
    queue, ann = AnnotationQueue(store), principal(store, people["ann"])
    queue.submit(ann, "run", query_ids[0], None, "abstain-1")
    queue.submit(ann, "run", query_ids[1], Label(rating=4), "rating-01")
    with pytest.raises(StoreError, match="from 1 to 5"):
        queue.submit(ann, "run", query_ids[1], Label(rating=6), "rating-02")
    with pytest.raises(StoreError, match="key must be"):
        queue.submit(ann, "run", query_ids[1], Label(rating=2), "short")
    assert store.status(query_ids) == {query_ids[0]: "abstained", query_ids[1]: "answered"}


def test_an_annotator_cannot_see_or_answer_another_projects_queries(store):
    query_ids, people = human_project(store, project="a", comparisons=1)
    other_ids, others = human_project(store, project="b", comparisons=1, people=("cat",))
    queue, cat = AnnotationQueue(store), principal(store, others["cat"])
    assert not cat.may_use("a")
    with pytest.raises(NotFound):
        queue.submit(cat, "b", query_ids[0], Label(preference=1.0), "cross-project")
    with pytest.raises(NotFound):
        queue.skip(cat, "b", query_ids[0])
    assert store.labels("a") == []


def test_tokens_are_stored_hashed_checked_whole_and_revocable(store):
    token = issue_token(store, "ann", project="run")
    admin = issue_token(store, "root", role="admin")
    with store.reading() as conn:
        stored = [row.secret_hash for row in conn.execute(tokens.select())]
    assert all(token.split("_", 2)[2] not in h and len(h) == 64 for h in stored)
    assert authenticate(store, token).annotator == "ann"
    assert authenticate(store, admin).is_admin and authenticate(store, admin).may_use("anything")
    for wrong in (token[:-1] + ("A" if token[-1] != "A" else "B"), token + "x", "pf_1", "", None, "pf_99_" + "a" * 43,
                  "Bearer " + token):
        assert authenticate(store, wrong) is None
    assert revoke_tokens(store, "ann") == 1
    assert authenticate(store, token) is None
    with pytest.raises(StoreError, match="admin token covers every project"):
        issue_token(store, "x", project="run", role="admin")
    with pytest.raises(StoreError, match="annotator name"):
        issue_token(store, "<script>", project="run")


def test_cohen_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    a = ["l", "r", "r", "t", "l", "l", "r", "x", "t", "r"]
    b = ["l", "r", "l", "t", "l", "r", "r", "x", "r", "r"]
    assert cohen_kappa(list(zip(a, b))) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([("l", "l"), ("l", "l")]) is None
    assert cohen_kappa([]) is None


def test_fleiss_kappa_matches_the_textbook_example():
    """Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories, kappa 0.210."""
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa([[2, 0], [2, 0]]) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 0], [1, 2]])
