"""``polyfuse feedback answer``: a registered feedback source answers a project's pending queries, offline.

How a backlog gets labels without a training run: the episodes a served policy logged (``polyfuse serve
--log-feedback``), or queries a stopped run left pending, answered by the simulated annotator or an AI
judge. Queries are read from the store in the source's batch size, asked through the same
:class:`~polyfuse_feedback.asking.Asker` a run uses (so failures and invalid answers are recorded the
same way: ``failed``, with the reason) and each batch's answers are committed before the next is asked.
Light at import (``polyfuse --help`` builds its parser): the store is imported by the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from polyfuse.errors import PolyfuseError

if TYPE_CHECKING:
    from polyfuse_feedback.store import LabelStore


def add_answer_arguments(parser: argparse.ArgumentParser, db_help: str) -> None:
    parser.add_argument("--db", required=True, help=db_help)
    parser.add_argument("--project", required=True, help="the project whose pending queries are answered")
    parser.add_argument("--source", required=True, help="the registered feedback source to run (synthetic, "
                        "http-judge, model-judge, embedding-judge...); it answers the queries posted for this name")
    parser.add_argument("--params", default="{}", metavar="JSON",
                        help="the source's params, as in a config's feedback entry (default {})")
    parser.add_argument("--limit", type=int, default=None, help="answer at most this many (highest priority first)")
    parser.add_argument("--seed", type=int, default=0, help="the source's seed (default 0)")


def answer_command(args: argparse.Namespace, registry: Any) -> int:
    from polyfuse_feedback.commands import open_store
    from polyfuse_feedback.human import StoreAnsweredSource

    try:
        params = json.loads(args.params)
    except ValueError as exc:
        raise PolyfuseError(f"--params is not valid JSON ({exc}); e.g. --params '{{\"temperature\": 0.1}}'") from None
    if not isinstance(params, dict):
        raise PolyfuseError(f"--params must be a JSON object of the source's params, got {args.params}")
    if args.limit is not None and args.limit < 1:
        raise PolyfuseError(f"--limit must be positive, got {args.limit}")
    from pydantic import ValidationError

    from polyfuse_feedback.plugin import describe

    try:
        source = registry.create("feedback", args.source, params, seed=args.seed)
    except ValidationError as exc:
        raise PolyfuseError(f"--params of feedback source {args.source!r}: {describe(exc)}") from None
    try:
        if isinstance(source, StoreAnsweredSource):
            raise PolyfuseError(f"{args.source!r} queries are answered by people in the annotation app "
                                "(polyfuse feedback serve), not by this command; give an automatic source")
        with open_store(args.db) as store:
            names = [p.name for p in store.projects()]
            if args.project not in names:
                raise PolyfuseError(f"no project named {args.project!r} in {store.url}; its projects: "
                                    f"{', '.join(names) or 'none'}")
            counts = answer_pending(store, args.project, args.source, source, limit=args.limit)
    finally:
        source.close()
    print(f"{args.source} answered {counts['asked']} pending queries of project {args.project!r}: "
          f"{counts['labelled']} labelled, {counts['abstained']} abstained, {counts['failed']} failed")
    return 0 if counts["failed"] == 0 else 1


def answer_pending(store: LabelStore, project: str, name: str, source: Any, *, limit: int | None = None,
                   progress: bool = True) -> dict[str, int]:
    """Ask ``source`` (registered as ``name``) the pending queries posted for it in ``project``; the asker's counts."""
    from tqdm import tqdm

    from polyfuse_feedback.asking import Asker

    pending = [query.id for query in store.pending(project, source=name, limit=limit)]
    asker = Asker(store, project, name, source)
    try:
        with tqdm(total=len(pending), unit="query", desc=f"{name} answering", file=sys.stderr,
                  dynamic_ncols=True, disable=not progress) as bar:
            for start in range(0, len(pending), asker.batch_size):
                ids = pending[start:start + asker.batch_size]
                asker.ask(zip(ids, store.queries(ids)))
                asker.wait()
                bar.update(len(ids))
    finally:
        asker.close()
    return dict(asker.counts)
