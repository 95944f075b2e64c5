"""The app as people run it: `polyfuse feedback serve` in its own process, annotators over real HTTP on
loopback, SIGKILL of the server while 16 annotators submit 600 labels."""

import threading
import time

from app_clients import Annotator, free_port, kill, start_server
from polyfuse_feedback.access import issue_token
from polyfuse_feedback.store import LabelStore, NewQuery
from test_store import make_segment

ANNOTATORS, LABELS = 16, 600


def test_no_acknowledged_label_is_lost_when_the_server_is_killed(store_url):
    with LabelStore(store_url) as store:
        ids = store.add_segments("run", [make_segment(s % 7, length=1) for s in range(LABELS + 1)])
        store.post_queries("run", [NewQuery(ids[i], ids[i + 1], priority=float(i % 13), source="human")
                                   for i in range(LABELS)])
        tokens = [issue_token(store, f"annotator{n}", project="run") for n in range(ANNOTATORS)]
        database_url = store.database_url
    port = free_port()
    server = start_server(database_url, port)
    people = [Annotator(port, token) for token in tokens]
    errors = []

    def work(person):
        try:
            while person.cycle():
                pass
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    try:
        while sum(len(p.acknowledged) for p in people) < LABELS // 3 and not errors:
            time.sleep(0.01)
        kill(server)  # SIGKILL, mid-stream: requests are in flight
        killed_at = sum(len(p.acknowledged) for p in people)
        time.sleep(0.5)
        server = start_server(database_url, port)
        for thread in threads:
            thread.join(timeout=300)
    finally:
        kill(server)
    assert not errors, f"{errors[:3]}\nthe server's log:\n{open(server.log_path, errors='replace').read()[-3000:]}"
    acknowledged = [entry for p in people for entry in p.acknowledged]
    assert killed_at < LABELS and len(acknowledged) == LABELS, "every query answered once, across the kill"
    with LabelStore(database_url) as store:
        stored = store.labels("run")
    by_key = {}
    for record in stored:
        by_key.setdefault(record.key.rsplit(":", 1)[1], []).append(record.id)
    assert all(by_key.get(key) == [label_id] for key, label_id in acknowledged), "acknowledged = stored, once"
    assert len(stored) == LABELS, "no duplicates: a retried submission returned the first one's label"
    assert len({record.query_id for record in stored}) == LABELS, "no query answered by two people"
