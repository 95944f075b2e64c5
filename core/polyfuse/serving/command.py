"""``polyfuse serve RUN`` (the trained policy behind an HTTP API until SIGINT or SIGTERM) and ``polyfuse export RUN``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from polyfuse.errors import PolyfuseError
from polyfuse.registry import Registry

INSTALL = "pip install 'polyfuse[serve]'"
SWITCH_INTERVAL_S = 0.0005
"""Python's GIL switch interval while serving (as the feedback app's): a request is handed from the event
loop to the inference thread and back, and at the default 5 ms each hand-over may wait that long for the
other thread to let go."""
EXPORT_FORMATS = ("torchscript", "onnx")
ONNX_INSTALL = "pip install 'polyfuse[onnx]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run's output_dir (e.g. runs/latest) or a checkpoint folder in it")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                                                            "machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="observations gathered into one forward pass under load (default 32)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0,
                        help="how long the first waiting request waits for others to join its batch (default 2)")
    parser.add_argument("--reload-interval", type=float, default=5.0, metavar="SECONDS",
                        help="how often RUN/promoted.json is checked; a newly promoted checkpoint is swapped in "
                             "without downtime (default 5; 0: never; a checkpoint folder given as RUN is fixed)")
    logging = parser.add_argument_group("episode logging (needs polyfuse-feedback)")
    logging.add_argument("--log-feedback", metavar="DB", help="record the episodes answered into this label store "
                         "(a database URL, a run directory or a .sqlite file, as polyfuse feedback --db; created "
                         "if missing) and post a share of them as rating queries")
    logging.add_argument("--feedback-project", metavar="NAME",
                         help="the label store's project they go to (default served-RUN_NAME)")
    logging.add_argument("--query-share", type=float, default=0.1, metavar="SHARE",
                         help="share of the logged episodes posted as good/bad rating queries (default 0.1)")
    logging.add_argument("--query-source", default="human", metavar="SOURCE",
                         help="the feedback source asked (default human: the annotation app shows them; "
                              "synthetic or a judge: answered by polyfuse feedback answer)")
    logging.add_argument("--query-seed", type=int, default=0, help="seed of which episodes are asked (default 0)")


def command(args: argparse.Namespace, registry: Registry) -> int:
    if args.max_batch <= 0:
        raise PolyfuseError(f"--max-batch must be positive, got {args.max_batch}")
    if args.max_wait_ms < 0:
        raise PolyfuseError(f"--max-wait-ms must not be negative, got {args.max_wait_ms}")
    if args.reload_interval < 0:
        raise PolyfuseError(f"--reload-interval must not be negative, got {args.reload_interval}")
    if not 0 <= args.query_share <= 1:
        raise PolyfuseError(f"--query-share must be in [0, 1], got {args.query_share}")
    if not 0 <= args.port <= 65535:
        raise PolyfuseError(f"--port must be in [0, 65535], got {args.port}")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise PolyfuseError(f"polyfuse serve needs {exc.name}: {INSTALL}") from None
    from pathlib import Path

    from polyfuse.serving.app import create_app
    from polyfuse.serving.model import ServedModel
    from polyfuse.serving.reload import follows_promotions

    sys.setswitchinterval(SWITCH_INTERVAL_S)  # this process only serves
    open_sink = _feedback_plugin() if args.log_feedback else None  # before a load that takes seconds
    if args.log_feedback:  # a name nobody answers to would leave every query it posts pending
        try:
            registry.get("feedback", args.query_source)
        except PolyfuseError as exc:
            raise PolyfuseError(f"--query-source: {exc}") from None
    print(f"loading {args.run} ...", file=sys.stderr, flush=True)
    model = ServedModel(args.run, registry)
    try:
        sink = _feedback_sink(open_sink, args, model) if open_sink is not None else None
    except BaseException:
        model.close()
        raise
    follow = Path(args.run) if args.reload_interval > 0 and follows_promotions(Path(args.run)) else None
    try:
        app = create_app(model, max_batch=args.max_batch, max_wait_s=args.max_wait_ms / 1000, follow=follow,
                         reload_interval_s=args.reload_interval,
                         load=lambda checkpoint: ServedModel(checkpoint, registry), feedback_sink=sink)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                               access_log=False, timeout_graceful_shutdown=5))
        _announce_when_listening(server, model, args.host, logging=sink is not None)
        if follow is not None:
            print(f"following promotions in {follow / 'promoted.json'} (checked every {args.reload_interval:g} s)",
                  file=sys.stderr, flush=True)
        try:
            _serve_until_signalled(server)
        except SystemExit:  # uvicorn's way out when it cannot listen, after logging why
            if server.started:
                raise
        if not server.started:
            raise PolyfuseError(f"cannot listen on {args.host}:{args.port}: is the port in use? (--port 0: any free one)")
    finally:
        model.close()
        if sink is not None:
            sink.close()
    print("polyfuse serve: stopped", file=sys.stderr, flush=True)
    return 0


def _feedback_plugin() -> Any:
    """``polyfuse_feedback.served.open_sink``: the label-store writer of ``--log-feedback`` is the feedback
    plugin's, imported only here (the core does not depend on it)."""
    try:
        from polyfuse_feedback.served import open_sink
    except ImportError as exc:
        raise PolyfuseError(f"--log-feedback needs polyfuse-feedback (missing: {exc.name}): "
                            "pip install polyfuse-feedback") from None
    return open_sink


def _feedback_sink(open_sink: Any, args: argparse.Namespace, model: Any) -> Any:
    from pathlib import Path

    from polyfuse.serving.reload import follows_promotions

    served = Path(args.run).resolve()
    run_name = served.name if follows_promotions(served) else served.parent.name  # a checkpoint folder: its run's
    project = args.feedback_project or f"served-{run_name}"
    sink = open_sink(args.log_feedback, project, query_share=args.query_share, source=args.query_source,
                     seed=args.query_seed, env_id=model.policy.config.env.id,
                     observation_space=model.observation_space, action_names=model.action_names)
    print(f"logging episodes into project {project!r} of {sink.store.url}; {args.query_share:g} of them asked of "
          f"{args.query_source!r}", file=sys.stderr, flush=True)
    return sink


def _serve_until_signalled(server: Any) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully (requests in flight are answered) and return.

    uvicorn re-raises the signal it caught once it has shut down, to the handler it found: ours only
    notes it, so the command ends normally (exit status 0) instead of being killed by it.
    """
    import signal

    previous = {sig: signal.signal(sig, lambda number, frame: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _announce_when_listening(server: Any, model: Any, host: str, logging: bool) -> None:
    """Print the URL once the socket listens (with --port 0, the port the system chose)."""
    original = server.startup

    async def startup(sockets: Any = None) -> None:
        await original(sockets=sockets)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            outcome = ", POST /v1/outcome" if logging else ""
            print(f"serving {model.location} (step {model.step}) at http://{shown}:{port}  "
                  f"(POST /v1/act{outcome}, GET /health, GET /metrics)", flush=True)

    server.startup = startup


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run's output_dir (e.g. runs/latest) or a checkpoint folder in it")
    parser.add_argument("--format", choices=EXPORT_FORMATS, required=True,
                        help=f"torchscript (torch.jit, needs nothing more) or onnx ({ONNX_INSTALL})")
    parser.add_argument("-o", "--output", required=True,
                        help="file to write; FILE.json beside it describes the inputs and outputs")


def export_command(args: argparse.Namespace, registry: Registry) -> int:
    from pathlib import Path

    from polyfuse.serving.export import export_policy

    inputs = export_policy(Path(args.run), args.format, Path(args.output), registry)
    described = ", ".join(f"{i.name} (B, {', '.join(map(str, i.shape))}) {i.dtype}" for i in inputs)
    memory = " and next_memory (feed it back as the episode's next memory; zeros start an episode)" \
        if any(i.memory for i in inputs) else ""
    print(f"{args.format} model written to {args.output}: inputs {described}; outputs logits and probabilities "
          f"(B, actions){memory}; described in {args.output}.json")
    return 0
