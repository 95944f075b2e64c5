"""A label store with a project of human queries, annotators and their tokens, for the app's tests."""

from polyfuse_feedback.access import authenticate, issue_token
from polyfuse_feedback.store import NewQuery
from test_store import make_segment

DISPLAY = {"env": "polyfuse/DigitsVQA-v0", "actions": [str(d) for d in range(10)] + ["yes", "no"],
           "observations": {"image": "image", "features": "vector", "question": "text"}}


def human_project(store, project="run", comparisons=6, ratings=0, overlap=0.0, people=("ann", "bob")):
    """``(query_ids, {name: token})``: comparisons with priorities 0..n-1 (the last first), then ratings of 5 levels."""
    store.configure_project(project, display=DISPLAY, instructions="Which answer is right?", overlap=overlap)
    ids = store.add_segments(project, [make_segment(s, length=1) for s in range(comparisons + ratings + 1)])
    items = [NewQuery(ids[i], ids[i + 1], priority=float(i), source="human") for i in range(comparisons)]
    items += [NewQuery(ids[comparisons + i], None, 5, priority=-1.0 - i, source="human") for i in range(ratings)]
    query_ids = store.post_queries(project, items)
    return query_ids, {name: issue_token(store, name, project=project) for name in people}


def principal(store, token):
    found = authenticate(store, token)
    assert found is not None
    return found
