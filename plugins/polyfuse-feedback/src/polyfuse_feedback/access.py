"""Who may do what in the label store: annotators and their access tokens.

A token reads ``pf_<id>_<secret>``. Only a SHA-256 of the secret is stored; a presented token is
looked up by its id and its secret's hash compared in constant time (:func:`hmac.compare_digest`), so
neither a database dump nor response timing gives a usable token away. A token is scoped to one
project (annotators, and training runs that post queries through the API: role ``trainer``) or to
every project (``admin``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from polyfuse_feedback.schema import ROLES, annotators, projects, tokens
from polyfuse_feedback.store import LabelStore, StoreError

TOKEN_PATTERN = re.compile(r"pf_(\d{1,18})_([A-Za-z0-9_-]{20,100})")
NAME_PATTERN = re.compile(r"[\w.@+-]{1,64}")


@dataclass(frozen=True)
class Principal:
    """The holder of a valid token: an annotator, in one project (``project`` set) or every one (admin)."""

    token_id: int
    annotator_id: int
    annotator: str
    role: str
    project_id: int | None
    project: str | None

    def may_use(self, project: str) -> bool:
        return self.project is None or self.project == project

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise StoreError(f"annotator name {name!r}: use 1-64 letters, digits, '.', '_', '-', '@' or '+'")
    return name


def annotator_id(store: LabelStore, name: str) -> int:
    """The id of annotator ``name``, created on first use."""
    check_name(name)
    with store.writing() as conn:
        found = conn.execute(sa.select(annotators.c.id).where(annotators.c.name == name)).scalar()
        if found is None:
            found = conn.execute(annotators.insert().values(name=name, created_at=time.time())).inserted_primary_key[0]
    return int(found)


def issue_token(store: LabelStore, annotator: str, *, project: str | None = None, role: str = "annotator") -> str:
    """A new token for ``annotator`` (created if new) on ``project``; shown once, stored hashed.

    ``role``: ``annotator`` (answers ``project``'s queries), ``trainer`` (a training run posting
    ``project``'s queries through the API) or ``admin`` (every project; ``project`` must be ``None``).
    """
    if role not in ROLES:
        raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if (role == "admin") != (project is None):
        raise StoreError("an admin token covers every project (give no project); annotator and trainer tokens "
                         "need one")
    person = annotator_id(store, annotator)
    project_id = None if project is None else store.project(project)
    secret = secrets.token_urlsafe(32)
    with store.writing() as conn:
        token_id = conn.execute(tokens.insert().values(
            annotator_id=person, project_id=project_id, role=role, secret_hash=_hash(secret),
            created_at=time.time())).inserted_primary_key[0]
    return f"pf_{token_id}_{secret}"


def authenticate(store: LabelStore, token: str | None) -> Principal | None:
    """The holder of ``token``, or ``None`` for anything else (malformed, unknown, wrong secret, revoked)."""
    match = TOKEN_PATTERN.fullmatch(token or "")
    if match is None:
        return None
    statement = (sa.select(tokens.c.id, tokens.c.annotator_id, annotators.c.name, tokens.c.role, tokens.c.project_id,
                           projects.c.name, tokens.c.secret_hash, tokens.c.revoked_at)
                 .join(annotators, annotators.c.id == tokens.c.annotator_id)
                 .outerjoin(projects, projects.c.id == tokens.c.project_id)
                 .where(tokens.c.id == int(match.group(1))))
    with store.reading() as conn:
        row = conn.execute(statement).one_or_none()
    stored_hash = row.secret_hash if row is not None else _hash("no such token")  # the same work either way
    valid = hmac.compare_digest(_hash(match.group(2)), stored_hash)
    if row is None or not valid or row.revoked_at is not None:
        return None
    return Principal(row[0], row[1], row[2], row[3], row[4], row[5])


def revoke_tokens(store: LabelStore, annotator: str) -> int:
    """Revoke every token of ``annotator``; how many were live."""
    with store.writing() as conn:
        person = conn.execute(sa.select(annotators.c.id).where(annotators.c.name == annotator)).scalar()
        if person is None:
            raise StoreError(f"no annotator named {annotator!r} in the label store at {store.url}")
        result = conn.execute(tokens.update().where(tokens.c.annotator_id == person, tokens.c.revoked_at.is_(None))
                              .values(revoked_at=time.time()))
    return int(result.rowcount)
