"""Who is asking, and whether a form post came from our own page.

Pages use a session cookie holding the token (``HttpOnly``, ``SameSite=Strict``) and every form
carries a CSRF token: an HMAC of the session's token id under the app's secret (a double-submit
cookie on the login form, before there is a session). The JSON API takes ``Authorization: Bearer``
only, never the cookie, so no other site can make a browser call it. Tokens never travel in URLs,
so they never reach an access log: login links carry them in the fragment, which browsers do not send.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import HTTPException, Request

from polyfuse_feedback.access import Principal, authenticate
from polyfuse_feedback.store import LabelStore

SESSION_COOKIE = "pf_session"
LOGIN_CSRF_COOKIE = "pf_login_csrf"


class LoginRequired(Exception):
    """A page needs a session: the browser is sent to the login form."""


def csrf_token(secret: bytes, principal: Principal) -> str:
    return hmac.new(secret, f"session:{principal.token_id}".encode(), hashlib.sha256).hexdigest()


def check_csrf(secret: bytes, principal: Principal, presented: str | None) -> None:
    if not presented or not hmac.compare_digest(csrf_token(secret, principal), presented):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def check_login_csrf(request: Request, presented: str | None) -> None:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not presented or not hmac.compare_digest(expected, presented):
        raise HTTPException(403, "the login form's CSRF token is missing or wrong: open the login page again")


def page_principal(store: LabelStore, request: Request) -> Principal:
    """The session's holder; :class:`LoginRequired` without a valid session."""
    principal = authenticate(store, request.cookies.get(SESSION_COOKIE))
    if principal is None:
        raise LoginRequired()
    return principal


def api_principal(store: LabelStore, request: Request) -> Principal:
    """The bearer token's holder; 401 without a valid one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    principal = authenticate(store, token.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        raise HTTPException(401, "send a valid token as 'Authorization: Bearer pf_...' (polyfuse feedback token "
                            "NAME --project PROJECT makes one)", headers={"WWW-Authenticate": "Bearer"})
    return principal


def require_project(principal: Principal, project: str) -> None:
    """404, not 403, for another project's data: its existence is not disclosed either."""
    if not principal.may_use(project) or principal.role == "trainer":
        raise HTTPException(404, f"no project {project!r} for this token")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise HTTPException(403, "this needs an admin token (polyfuse feedback token NAME --admin)")
