"""The ``human`` feedback source: people answer the run's queries in the annotation web app.

Its queries wait in the label store; the app (:mod:`polyfuse_feedback.app`) shows them to annotators
and writes their answers there, and the reward model reads them at its next update — training never
waits for people. With ``serve: true`` (the default) the run starts the app itself, on loopback, and
prints one login link per annotator; otherwise start it with ``polyfuse feedback serve --db URL``
wherever the database is reachable.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

from polyfuse import ComponentConfig
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import FeedbackSource, Label, Query
from pydantic import Field
from tqdm import tqdm

if TYPE_CHECKING:
    from collections.abc import Sequence

    from polyfuse_feedback.store import LabelStore

DEFAULT_PORT = 8765


class StoreAnsweredSource(FeedbackSource):
    """A feedback source whose answers another program writes into the label store (people in a web app).

    The run's router posts its queries to the store and never calls :meth:`label`; :meth:`start` is
    called once with the store and project before the first query, to tell people where to answer.
    """

    asynchronous = True

    def start(self, store: LabelStore, project: str) -> None:
        raise NotImplementedError

    def label(self, queries: Sequence[Query]) -> list[Label | None]:
        raise RuntimeError(f"{type(self).__name__}'s answers come through the label store, not label()")


class HumanConfig(ComponentConfig):
    """Params of the ``human`` feedback source."""

    serve: bool = Field(True, description="Start the annotation app inside the run (stopped when it ends); false: "
                        "run `polyfuse feedback serve` yourself, e.g. on another machine sharing the database.")
    host: str = Field("127.0.0.1", description="Address the app listens on (loopback: this machine only).")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="Port of the app; 0: any free port.")
    annotators: list[str] = Field(default_factory=lambda: ["annotator"], description="People to give a login link "
                                  "(a new token each for this project) when the run starts.")
    overlap: float = Field(0.0, ge=0, le=1, description="Share of queries shown to two annotators, to measure their "
                           "agreement (Cohen's and Fleiss' kappa on the admin page).")
    instructions: str = Field("Which of the two did better at the task?", description="The question annotators "
                              "are asked, shown above every query.")
    lease_s: float = Field(600.0, gt=0, description="Seconds a shown query stays reserved for its annotator.")


class HumanFeedback(StoreAnsweredSource):
    """People, through the annotation app; see the module docstring."""

    batch_size = 1

    def __init__(self, config: HumanConfig) -> None:
        self.config = config
        self.server: Any = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self, store: LabelStore, project: str) -> None:
        from polyfuse_feedback.access import issue_token

        config = self.config
        store.configure_project(project, instructions=config.instructions, overlap=config.overlap)
        if store.app_url is not None:  # the run talks to an app elsewhere: tokens are given out there
            if config.serve:
                raise PolyfuseError(f"the run's label store is the annotation app at {store.app_url}: set the "
                                    "human source's serve: false (the app is already running there)")
            tqdm.write(f"human feedback for project {project!r}: annotate at {store.app_url} (tokens: polyfuse "
                       f"feedback token NAME --project {project} on the app's machine)", file=sys.stderr)
            return
        links = {name: issue_token(store, name, project=project) for name in config.annotators}
        admin = issue_token(store, "admin", role="admin")
        if config.serve:
            self.url = self._serve(store.database_url)
            where = self.url
        else:
            where = f"the app (polyfuse feedback serve --db {store.url})"
        lines = [f"human feedback for project {project!r}: annotate at {where}"]
        lines += [f"  {name}: {where}/login#token={token}" if config.serve else f"  {name}'s token: {token}"
                  for name, token in links.items()]
        lines.append(f"  admin page: {where}/login#token={admin}" if config.serve else f"  admin token: {admin}")
        tqdm.write("\n".join(lines), file=sys.stderr)  # above the run's progress bar, not through it

    def _serve(self, database_url: str) -> str:
        from polyfuse_feedback.app.server import start_in_thread

        self.server, self._thread, url = start_in_thread(database_url, self.config.host, self.config.port,
                                                         lease_s=self.config.lease_s)
        return url

    def close(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            if self._thread is not None:
                self._thread.join(10)
            self.server = None


def build_human(config: HumanConfig, seed: int = 0) -> HumanFeedback:
    del seed  # people need no seed
    return HumanFeedback(config)
