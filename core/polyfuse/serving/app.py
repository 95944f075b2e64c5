"""The inference server's HTTP API (FastAPI): ``POST /v1/act``, ``POST /v1/outcome``, ``GET /health``, ``GET /metrics``.

A client mistake is a 4xx naming the field and what was expected (``detail.field``,
``detail.problem``); bodies over the size limit are refused before they are read whole. A policy with
memory needs the episode of every observation, and ``/v1/outcome`` with ``"done": true`` ends its memory
of an episode (:mod:`polyfuse.serving.memories`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from polyfuse.body_limit import BodySizeLimit
from polyfuse.serving.batching import Batcher
from polyfuse.serving.episodes import EpisodeRecorder, SegmentSink
from polyfuse.serving.inputs import InvalidInput, decode_outcome, decode_request, parse_json
from polyfuse.serving.metrics import ServerMetrics
from polyfuse.serving.model import MAX_OBSERVATIONS, ServedModel
from polyfuse.serving.reload import DEFAULT_INTERVAL_S, PromotionWatcher

MAX_BODY_BYTES = 16 * 1024 * 1024


def _too_large(limit: int) -> dict[str, str]:
    return {"field": "body", "problem": f"larger than {limit} bytes; send fewer observations per request"}


def create_app(model: ServedModel, *, max_batch: int = 32, max_wait_s: float = 0.002,
               max_body_bytes: int = MAX_BODY_BYTES, follow: Path | None = None,
               reload_interval_s: float = DEFAULT_INTERVAL_S,
               load: Callable[[Path], ServedModel] | None = None,
               feedback_sink: SegmentSink | None = None) -> Any:
    """The ASGI app serving ``model``; its inference thread starts with the app and stops with it.

    With ``follow`` (a run directory), the checkpoint promoted there is loaded with ``load`` and swapped in
    without downtime (:mod:`polyfuse.serving.reload`); a replaced model is closed once its last batch is
    answered, and the one serving at shutdown when the app stops (``model`` stays its caller's to close).
    With ``feedback_sink``, what is answered is recorded as episodes (:mod:`polyfuse.serving.episodes`),
    written there from a background thread, and everything is written when the app stops.
    """
    if follow is not None and load is None:
        raise ValueError("follow needs load (how to build a model from a checkpoint folder)")
    metrics = ServerMetrics()
    state: dict[str, Any] = {"model": model}

    def swapped(old: ServedModel, new: ServedModel) -> None:
        state["model"] = new
        metrics.reloaded()
        try:
            old.close()
        except Exception as exc:  # noqa: BLE001 (the new model serves whatever closing the old one did)
            print(f"polyfuse serve: closing the replaced model failed: {exc!r}", file=sys.stderr, flush=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        if feedback_sink is not None:
            state["recorder"] = EpisodeRecorder(feedback_sink)
        state["batcher"] = Batcher(model, max_batch, max_wait_s, on_batch=metrics.batch, on_swap=swapped)
        watcher = None
        if follow is not None:
            watcher = PromotionWatcher(follow, model, load, state["batcher"].swap, reload_interval_s,
                                       on_refused=metrics.reload_refused)
            watcher.start()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.close()
            state.pop("batcher").close()
            if state["model"] is not model:
                state["model"].close()
            if "recorder" in state:
                state.pop("recorder").close()  # after the batcher: every answered step is in it

    app = FastAPI(title="polyfuse serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.metrics = metrics

    @app.exception_handler(InvalidInput)
    async def invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": {"field": exc.field, "problem": exc.problem}}, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ready" if "batcher" in state else "starting", **state["model"].describe(),
                "follows_promotions": str(follow) if follow is not None else None}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        text = metrics.prometheus()
        if state["model"].memories is not None:
            text += state["model"].memories.prometheus()
        if "recorder" in state:
            text += state["recorder"].prometheus()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.post("/v1/act")
    async def act(request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            return await answer_act(request, started)
        except InvalidInput as exc:
            metrics.request(exc.status, time.perf_counter() - started)
            raise
        except Exception:  # the server's failure (a 500): counted, so /metrics shows it
            metrics.request(500, time.perf_counter() - started)
            raise

    async def answer_act(request: Request, started: float) -> JSONResponse:
        serving = state["model"]  # a reloaded model reads the same observations (checked before the swap)
        asked = decode_request(parse_json(await request.body()), serving.observation_space, serving.keys,
                               MAX_OBSERVATIONS)
        if serving.memory_size and None in asked.episodes:
            field = "episode" if asked.single else f"episodes[{asked.episodes.index(None)}]"
            raise InvalidInput(field, f"this policy has a memory (optimizer.params.memory: {serving.memory_size}): "
                                      "its action depends on the episode so far, so send the episode each "
                                      'observation belongs to ("episode": ID, or "episodes": [ID, ...]); a new id '
                                      'starts an episode, /v1/outcome with "done": true ends one')
        answer, answered_by = await state["batcher"].submit(asked.observations, asked.episodes)
        if "recorder" in state:
            state["recorder"].answered(asked.observations, answer.actions, asked.episodes, answered_by.step)
        actions = [int(a) for a in answer.actions]
        probabilities = [[float(p) for p in row] for row in answer.probabilities]
        names = ([answered_by.action_names[a - answered_by.action_start] for a in actions]
                 if answered_by.action_names else None)
        rewards = None if answer.rewards is None else [float(r) for r in answer.rewards]
        spreads = None if answer.reward_spreads is None else [float(r) for r in answer.reward_spreads]
        remembered = None if answer.memory_steps is None else [int(n) for n in answer.memory_steps]
        if asked.single:
            content: dict[str, Any] = {"action": actions[0], "probabilities": probabilities[0]}
            if names:
                content["action_name"] = names[0]
            if rewards is not None:
                content["reward"] = rewards[0]
            if spreads is not None:
                content["reward_spread"] = spreads[0]
            if remembered is not None:
                content["memory_steps"] = remembered[0]
        else:
            content = {"actions": actions, "probabilities": probabilities}
            if names:
                content["action_names"] = names
            if rewards is not None:
                content["rewards"] = rewards
            if spreads is not None:
                content["reward_spreads"] = spreads
            if remembered is not None:
                content["memory_steps"] = remembered
        response = JSONResponse({**content, "step": answered_by.step})  # rendered here: may fail, uncounted as 200
        metrics.request(200, time.perf_counter() - started, len(actions))
        return response

    @app.post("/v1/outcome")
    async def outcome(request: Request) -> dict[str, Any]:
        serving = state["model"]
        if "recorder" not in state and not serving.memory_size:
            raise InvalidInput("body", "this server neither logs episodes nor serves a policy with memory; start it "
                                       "with --log-feedback DB to log outcomes", 409)
        episode, reward, done = decode_outcome(parse_json(await request.body()))
        known = serving.forget(episode) if done else serving.remembers(episode)
        if "recorder" in state:
            known = state["recorder"].outcome(episode, reward, done) or known
        if not known:
            raise InvalidInput("episode", f"no open episode {episode!r}: send its steps to /v1/act with this "
                                          '"episode" first (an episode ends at its outcome with "done": true)', 404)
        return {"episode": episode, "reward": reward, "done": done}

    return BodySizeLimit(app, max_body_bytes, detail=_too_large)
