"""``polyfuse feedback ...``: serve the annotation app, hand out tokens, migrate a database, move label sets
between label stores, list a store's projects, answer pending queries with an automatic source
(:mod:`polyfuse_feedback.answering`), fit a reward model to a label set (:mod:`polyfuse_feedback.offline`).

Light on purpose (``polyfuse --help`` imports it): the store and SQLAlchemy are imported by the handler.
``--db`` takes a database URL (``sqlite:///...``, ``postgresql+psycopg://...``), a run directory (its
``feedback.sqlite``) or a SQLite file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyfuse.errors import PolyfuseError

from polyfuse_feedback.human import DEFAULT_PORT

if TYPE_CHECKING:
    from polyfuse_feedback.store import LabelStore

SQLITE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}
DB_HELP = "a database URL (sqlite:///PATH, postgresql+psycopg://USER@HOST/DB), a run directory or a .sqlite file"


def register_commands(register: Any) -> None:
    """Register ``polyfuse feedback``; the plugin's ``register_commands`` hook calls this."""
    register("feedback", feedback, arguments=add_arguments,
             help="human feedback and label stores: serve the annotation app, tokens, export/import labels, "
             "list projects, answer pending queries, train a reward model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="feedback_command", metavar="SUBCOMMAND", required=True)
    serve = commands.add_parser("serve", help="start the annotation web app on a label store")
    serve.add_argument("--db", required=True, help=f"{DB_HELP}; created if missing")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    serve.add_argument("--lease", type=float, default=600.0, metavar="SECONDS",
                       help="how long a shown query stays reserved for its annotator (default 600)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1); the state is in the "
                       "database, so more workers answer more annotators at once where cores allow")
    serve.add_argument("--admin-token", action="store_true", help="print a new admin token's login link at start")
    token = commands.add_parser("token", help="give an annotator (created if new) a new access token; printed once")
    token.add_argument("name", help="the annotator's name (letters, digits, . _ - @ +)")
    token.add_argument("--db", required=True, help=f"{DB_HELP}; created if missing")
    scope = token.add_mutually_exclusive_group(required=True)
    scope.add_argument("--project", help="the project this token may annotate")
    scope.add_argument("--admin", action="store_true", help="an admin token: every project, and the admin page")
    token.add_argument("--trainer", action="store_true", help="with --project: a token for a training run on "
                       "another machine to post the project's queries through the app's API (store.url: the app)")
    revoke = commands.add_parser("revoke", help="revoke every token of an annotator")
    revoke.add_argument("name")
    revoke.add_argument("--db", required=True, help=DB_HELP)
    migrate = commands.add_parser("migrate", help="upgrade a label store's schema to this version's (opening a store "
                                  "does it too; this says what was done)")
    migrate.add_argument("--db", required=True, help=DB_HELP)
    export = commands.add_parser("export", help="write a project's labels, segments inline, to a JSONL file")
    export.add_argument("--db", required=True, help=DB_HELP)
    export.add_argument("--project", required=True, help="the project (training run) to export")
    export.add_argument("-o", "--output", required=True, help="the JSONL file to write")
    imported = commands.add_parser("import", help="add the labels of a JSONL export to a project (idempotent)")
    imported.add_argument("file", help="a file written by `polyfuse feedback export`")
    imported.add_argument("--db", required=True, help=f"{DB_HELP}; created if missing")
    imported.add_argument("--project", required=True, help="the project to add them to (created if missing)")
    listing = commands.add_parser("projects", help="the projects of a label store, with their counts")
    listing.add_argument("--db", required=True, help=DB_HELP)
    listing.add_argument("--json", action="store_true", help="one JSON object per project")
    from polyfuse_feedback.answering import add_answer_arguments
    from polyfuse_feedback.offline import add_train_reward_arguments

    add_answer_arguments(commands.add_parser(
        "answer", help="answer a project's pending queries with an automatic feedback source (synthetic, a judge)"),
        DB_HELP)

    add_train_reward_arguments(commands.add_parser(
        "train-reward", help="fit a preference-model reward to stored labels, to use it by name later"))


def feedback(args: argparse.Namespace, registry: Any) -> int:
    """Run ``polyfuse feedback SUBCOMMAND``."""
    if args.feedback_command == "train-reward":
        from polyfuse_feedback.offline import train_reward

        return train_reward(args, registry)
    if args.feedback_command == "answer":
        from polyfuse_feedback.answering import answer_command

        return answer_command(args, registry)
    handlers = {"export": export_labels, "import": import_labels, "projects": list_projects, "serve": serve_app,
                "token": new_token, "revoke": revoke, "migrate": migrate}
    return handlers[args.feedback_command](args)


def store_url(db: str, *, create: bool) -> str:
    """The database URL ``--db`` means; a path that holds no store is refused unless ``create``."""
    if "://" in db:
        return db
    path = Path(db).expanduser()
    if path.is_file() or (create and path.suffix in SQLITE_SUFFIXES):
        return f"sqlite:///{path.resolve()}"
    run_store = path / "feedback.sqlite"
    if run_store.is_file() or create:
        return f"sqlite:///{run_store.resolve()}"
    if path.is_dir():
        raise PolyfuseError(f"{db} holds no label store (feedback.sqlite): is it the output_dir of a run "
                            "that asked for feedback?")
    raise PolyfuseError(f"--db {db}: no such run directory or SQLite file; give a database URL, a run "
                        "directory or a .sqlite file")


def open_store(db: str, *, create: bool = False) -> LabelStore:
    from polyfuse_feedback.store import LabelStore

    return LabelStore(store_url(db, create=create))


def export_labels(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        names = [p.name for p in store.projects()]
        if args.project not in names:
            raise PolyfuseError(f"no project named {args.project!r} in {store.url}; "
                                f"its projects: {', '.join(names) or 'none'}")
        try:
            count = store.export_jsonl(args.project, args.output)
        except OSError as exc:
            raise PolyfuseError(f"cannot write {args.output}: {exc}") from None
    print(f"{count} labels of project {args.project!r} written to {args.output}")
    return 0


def import_labels(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise PolyfuseError(f"no such label export: {args.file}")
    with open_store(args.db, create=True) as store:
        added = store.import_jsonl(args.file, args.project)
        url = store.url
    print(f"{added} new labels imported into project {args.project!r} of {url}")
    return 0


def list_projects(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        projects = store.projects()
    if args.json:
        for project in projects:
            print(json.dumps(project.__dict__))
        return 0
    if not projects:
        print("no projects")
        return 0
    width = max(len(p.name) for p in projects)
    print(f"{'project':<{width}}  {'labels':>7}  {'queries':>7}  {'pending':>7}  {'segments':>8}")
    for p in projects:
        print(f"{p.name:<{width}}  {p.labels:>7}  {p.queries:>7}  {p.pending:>7}  {p.segments:>8}")
    return 0


def serve_app(args: argparse.Namespace) -> int:
    from polyfuse_feedback.app.server import serve

    url = store_url(args.db, create=True)
    admin = None
    if args.admin_token:
        from polyfuse_feedback.access import issue_token

        with open_store(args.db, create=True) as store:
            admin = issue_token(store, "admin", role="admin")

    def started(address: str) -> None:
        print(f"annotation app on {address} (Ctrl+C stops it)", flush=True)
        if admin is not None:
            print(f"  admin page: {address}/login#token={admin}", flush=True)

    serve(url, args.host, args.port, lease_s=args.lease, workers=args.workers, on_start=started)
    return 0


def new_token(args: argparse.Namespace) -> int:
    from polyfuse_feedback.access import issue_token

    if args.trainer and args.admin:
        raise PolyfuseError("--trainer tokens are for one project: give --project, not --admin")
    role = "admin" if args.admin else "trainer" if args.trainer else "annotator"
    with open_store(args.db, create=True) as store:
        token = issue_token(store, args.name, project=args.project, role=role)
    scope = "every project (admin)" if args.admin else f"project {args.project!r}"
    use = ("give it to the run as store.token or POLYFUSE_FEEDBACK_TOKEN" if args.trainer
           else "log in at the app's /login#token=TOKEN")
    print(f"{role} token for {args.name} on {scope} (shown once; {use}):")
    print(token)
    return 0


def revoke(args: argparse.Namespace) -> int:
    from polyfuse_feedback.access import revoke_tokens

    with open_store(args.db) as store:
        count = revoke_tokens(store, args.name)
    print(f"{count} tokens of {args.name} revoked")
    return 0


def migrate(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from polyfuse_feedback import migrations

    url = store_url(args.db, create=False)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            before = migrations.current(conn)
    except sa.exc.DBAPIError as exc:
        raise PolyfuseError(f"cannot open {args.db}: {str(exc.orig).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    with open_store(args.db) as store:  # opening migrates
        url = store.url
    after = migrations.head()
    print(f"{url}: schema revision {before or 'none'} -> {after}" if before != after
          else f"{url}: already at schema revision {after}")
    return 0
