"""The machinery under every page: cookie sessions, CSRF, form reading, rendering, and
the page runner that turns a plain function ``handler(ctx) -> Response`` into a route.

Sessions. Signing in calls :func:`rsched.services.auth.login`; the access token and the
refresh token travel in two HttpOnly, SameSite=Lax cookies (Secure over HTTPS and always
in production). A page request with an expired access token is renewed through
:func:`rsched.services.auth.refresh` (the refresh token rotates; the new pair replaces the
cookies). Nothing about a session is kept in the process: any API process serves any
page. The event stream of a run never refreshes (a long-lived request racing a page load
for the same refresh token would look like a replay and end the session); it answers 401
and the page reloads, which refreshes.

CSRF. A random ``rsched_csrf`` cookie, and in every form a hidden ``csrf`` field holding
``HMAC(secret, cookie | user id)``: a forged cross-site POST carries neither, a planted
cookie does not give its HMAC for another user, and an ``Origin`` header naming another
site is refused as well.

Pages call the same service functions as the API routes (never the HTTP API). Writes
(POST) commit when the handler returns normally; a handler that re-renders a form with
errors calls :meth:`Ctx.invalid`, which rolls everything back. Reads never commit, except
the bookkeeping of a session refresh.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from rsched.config import Settings
from rsched.domain.errors import InvalidInput, NotFound, RschedError
from rsched.services import auth as auth_svc
from rsched.services.access import Actor, Forbidden, Role, Unauthenticated
from rsched.services.auth import RateLimited, TokenPair
from rsched.services.control import ControlStore, control_store

log = logging.getLogger("rsched.web")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

COOKIE_ACCESS = "rsched_at"
COOKIE_REFRESH = "rsched_rt"
COOKIE_CSRF = "rsched_csrf"
MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

MESSAGES = {
    "signed_out": "You are signed out.",
    "run_started": "The run is queued; progress appears below as soon as a worker takes it.",
    "abort_sent": "Abort requested: the solver stops and keeps the best schedule found.",
    "abort_already": "An abort was already requested for this run; nothing more was done.",
    "published": "Published: this version is now the active schedule.",
    "already_published": "This version was already published; nothing more was done.",
    "rolled_back": "Rolled back: the previous schedule is active again.",
    "rollback_already": "That publish was already rolled back; nothing more was done.",
    "feed_revoked": "Your calendar links are revoked; old URLs no longer work.",
    "swap_requested": "Your swap request was sent.",
    "swap_decided": "The decision is recorded.",
    "swap_done": "The swap is made: the published schedule now has it.",
    "swap_already": "This was already done; nothing more was done.",
}
"""Fixed texts for ``?msg=`` after a redirect (never text taken from the URL)."""


# ------------------------------------------------------------------------ templates


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            body = path.read_bytes()
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
                kind += "; charset=utf-8"
            digest = hashlib.sha256(body).hexdigest()[:12]
            files[path.relative_to(STATIC).as_posix()] = (body, kind, digest)
    return files


STATIC_FILES = _static_files()


def static_url(name: str) -> str:
    """The URL of a static file with its content hash (so a new release is never served
    a stale copy from a cache)."""
    entry = STATIC_FILES.get(name)
    return f"/static/{name}" + (f"?v={entry[2]}" if entry else "")


def _fmt_num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e12:
            return f"{int(value):,}"
        return f"{value:,.{digits}f}"
    return str(value)


def _fmt_pct(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.{digits}f} %"


def _fmt_time(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):  # stored in UTC (SQLite hands them back naive)
        aware = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _fmt_seconds(value: Any) -> str:
    if value is None:
        return "—"
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals["static"] = static_url
ENV.filters["num"] = _fmt_num
ENV.filters["pct"] = _fmt_pct
ENV.filters["when"] = _fmt_time
ENV.filters["secs"] = _fmt_seconds
ENV.filters["q"] = lambda v: quote(str(v), safe="")


# ------------------------------------------------------------------------ the context


@dataclass
class Auth:
    actor: Actor | None = None
    pair: TokenPair | None = None
    """A new pair to store in the cookies (after a refresh or a login)."""
    clear: bool = False
    """Remove the session cookies (they no longer sign anyone in)."""


@dataclass
class Ctx:
    """What a page handler gets: the request, a session (one unit of work), the caller,
    the submitted form and the helpers to answer."""

    request: Request
    session: Session
    settings: Settings
    auth: Auth
    form: dict[str, str]
    csrf_cookie: str
    new_csrf_cookie: bool
    rollback: bool = False
    status_note: dict[str, Any] = field(default_factory=dict)

    # -- who
    @property
    def actor(self) -> Actor:
        if self.auth.actor is None:
            raise Unauthenticated("sign in first")
        return self.auth.actor

    @property
    def signed_in(self) -> bool:
        return self.auth.actor is not None

    def manages(self, program_id: str) -> bool:
        role = self.auth.actor.role_in(program_id) if self.auth.actor else None
        return role in (Role.ADMIN, Role.COORDINATOR)

    # -- plumbing
    @property
    def factory(self) -> sessionmaker[Session]:
        factory: sessionmaker[Session] = self.request.app.state.sessionmaker
        return factory

    @property
    def engine(self) -> Engine:
        engine: Engine = self.request.app.state.engine
        return engine

    def store(self) -> ControlStore:
        return control_store(self.settings.redis_url, self.engine)

    def param(self, name: str, default: str = "") -> str:
        value = self.request.query_params.get(name, default)
        return value if "\x00" not in value else default

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])

    def field(self, name: str) -> str:
        return self.form.get(name, "").strip()

    def commit_now(self) -> None:
        """Commit what this request wrote so far (before calling a service that runs its
        own transactions, such as publishing: SQLite allows one writer at a time)."""
        self.session.commit()

    # -- answers
    @property
    def csrf(self) -> str:
        return csrf_token(self.settings, self.csrf_cookie, self.auth.actor)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        message = MESSAGES.get(self.param("msg"))
        values.setdefault("program", None)
        values.setdefault("role", None)
        values.setdefault("manages", False)
        values.setdefault("errors", {})
        body = ENV.get_template(template).render(
            csrf=self.csrf,
            actor=self.auth.actor,
            message=message,
            path=self.request.url.path,
            **values,
        )
        return HTMLResponse(body, status_code=status)

    def invalid(self, template: str, errors: Mapping[str, str], **values: Any) -> HTMLResponse:
        """Re-render a form with each error beside its field (422); nothing is written."""
        self.rollback = True
        return self.render(template, status=422, errors=dict(errors), **values)

    def redirect(self, url: str, *, msg: str | None = None) -> RedirectResponse:
        if msg is not None:
            url += ("&" if "?" in url else "?") + f"msg={msg}"
        return RedirectResponse(url, status_code=303)


def csrf_token(settings: Settings, cookie: str, actor: Actor | None) -> str:
    who = actor.user_id if actor is not None else "-"
    key = auth_svc.jwt_secret(settings).encode()
    return hmac.new(key, f"csrf|{cookie}|{who}".encode(), hashlib.sha256).hexdigest()


def field_errors(exc: InvalidInput, names: Mapping[str, str]) -> dict[str, str]:
    """A service's ``InvalidInput`` as form errors: each path is mapped to a form field by
    its first part (``names``: service path → field); anything else goes to ``form``."""
    out: dict[str, str] = {}
    for error in exc.errors:
        head = error.path.split(".")[0].split("[")[0]
        key = names.get(head, names.get(error.path, "form"))
        out[key] = f"{out[key]}; {error.message}" if key in out else error.message
    return out


# ------------------------------------------------------------------------ sessions


def _secure(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or not settings.is_dev


def authenticate(
    session: Session, settings: Settings, request: Request, *, refresh: bool = True
) -> Auth:
    """The caller behind the session cookies, renewing an expired access token with the
    refresh token when ``refresh``."""
    access = request.cookies.get(COOKIE_ACCESS)
    refresh_token = request.cookies.get(COOKIE_REFRESH)
    if access:
        try:
            return Auth(actor=auth_svc.actor_from_access_token(session, settings, access))
        except Unauthenticated:
            pass
    if refresh_token and refresh:
        try:
            pair = auth_svc.refresh(session, settings, refresh_token)
            actor = auth_svc.actor_from_access_token(session, settings, pair.access_token)
            session.commit()
            return Auth(actor=actor, pair=pair)
        except Unauthenticated:
            session.rollback()
            return Auth(clear=True)
    return Auth(clear=bool(access) and refresh)


def _apply_cookies(response: Response, ctx: Ctx) -> None:
    secure = _secure(ctx.request, ctx.settings)
    lifetime = ctx.settings.refresh_token_days * 86400
    if ctx.auth.pair is not None:
        for name, value in (
            (COOKIE_ACCESS, ctx.auth.pair.access_token),
            (COOKIE_REFRESH, ctx.auth.pair.refresh_token),
        ):
            response.set_cookie(
                name, value, max_age=lifetime, httponly=True, secure=secure, samesite="lax"
            )
    elif ctx.auth.clear:
        for name in (COOKIE_ACCESS, COOKIE_REFRESH):
            response.delete_cookie(name, httponly=True, secure=secure, samesite="lax")
    if ctx.new_csrf_cookie:
        response.set_cookie(
            COOKIE_CSRF, ctx.csrf_cookie, httponly=True, secure=secure, samesite="lax"
        )


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    own = urlsplit(str(request.url))
    theirs = urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (own.scheme, own.netloc)


def _csrf_ok(ctx: Ctx) -> bool:
    sent = ctx.form.get("csrf", "")
    return (
        not ctx.new_csrf_cookie
        and _same_origin(ctx.request)
        and hmac.compare_digest(sent.encode(), ctx.csrf.encode())
    )


def local_next(value: str | None, default: str = "/app") -> str:
    """A redirect target only if it is a path of this site (no scheme, no host)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


# ------------------------------------------------------------------------ the runner

Handler = Callable[[Ctx], Response]


async def _read_form(request: Request) -> dict[str, str] | Response:
    if request.method != "POST":
        return {}
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return HTMLResponse("Form too large", status_code=413, headers=PAGE_HEADERS)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return HTMLResponse("Form too large", status_code=413, headers=PAGE_HEADERS)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != FORM_TYPE:
        return HTMLResponse("Unsupported form encoding", status_code=415, headers=PAGE_HEADERS)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        return HTMLResponse("Malformed form", status_code=400, headers=PAGE_HEADERS)
    form: dict[str, str] = {}
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            return HTMLResponse("Malformed form", status_code=400, headers=PAGE_HEADERS)
        form.setdefault(key, value)
    return form


def _error_page(ctx: Ctx, status: int, title: str, detail: str) -> HTMLResponse:
    ctx.rollback = True
    return ctx.render("error.html", status=status, title=title, detail=detail)


def _run(handler: Handler, request: Request, form: dict[str, str], public: bool) -> Response:
    settings: Settings = request.app.state.settings
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        cookie = request.cookies.get(COOKIE_CSRF, "")
        fresh = len(cookie) < 32 or len(cookie) > 128
        ctx = Ctx(
            request=request,
            session=session,
            settings=settings,
            auth=Auth(),
            form=form,
            csrf_cookie=secrets.token_urlsafe(32) if fresh else cookie,
            new_csrf_cookie=fresh,
        )
        try:
            ctx.auth = authenticate(session, settings, request)
            if not public and ctx.auth.actor is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response: Response = ctx.redirect(f"/login?next={quote(target, safe='')}")
            elif request.method == "POST" and not _csrf_ok(ctx):
                response = _error_page(
                    ctx,
                    403,
                    "The form has expired",
                    "This form was not sent from this site's current page (or your browser "
                    "does not keep cookies). Go back, reload the page and send it again.",
                )
            else:
                response = handler(ctx)
            if request.method == "POST" and not ctx.rollback:
                session.commit()
            else:
                session.rollback()
        except Unauthenticated:
            session.rollback()
            ctx.auth = Auth(clear=True)
            response = ctx.redirect(f"/login?next={quote(request.url.path, safe='')}")
        except NotFound as exc:
            session.rollback()
            response = _error_page(ctx, 404, "Not found", str(exc))
        except Forbidden as exc:
            session.rollback()
            response = _error_page(ctx, 403, "Not allowed", str(exc))
        except RateLimited as exc:
            session.rollback()
            response = _error_page(ctx, 429, "Too many attempts", str(exc))
        except InvalidInput as exc:
            session.rollback()
            detail = "; ".join(
                f"{e.path}: {e.message}" if e.path else e.message for e in exc.errors
            )
            response = _error_page(ctx, 422, "Invalid input", detail)
        except RschedError as exc:
            session.rollback()
            response = _error_page(ctx, 409, "Refused", str(exc))
        except Exception:
            session.rollback()
            log.exception("page failed", extra={"path": request.url.path})
            rid = request.scope.get("state", {}).get("request_id")
            response = _error_page(
                ctx,
                500,
                "Something went wrong",
                f"An unexpected error occurred. Quote request id {rid} when reporting it.",
            )
    _apply_cookies(response, ctx)
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def page(handler: Handler, *, public: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint running ``handler`` in the thread pool (services are synchronous), with
    the session, CSRF and error handling above, and a ``Server-Timing`` header."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        form = await _read_form(request)
        if isinstance(form, Response):
            return form
        response = await run_in_threadpool(_run, handler, request, form, public)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    endpoint.__name__ = f"web_{handler.__name__}"
    return endpoint


def route(
    path: str, handler: Handler, *, methods: tuple[str, ...] = ("GET",), public: bool = False
) -> Route:
    """A page route: a plain Starlette route (not part of the API's OpenAPI document)."""
    return Route(
        path,
        page(handler, public=public),
        methods=list(methods),
        name=f"web_{handler.__name__}",
        include_in_schema=False,
    )


def static_file(request: Request) -> Response:
    name = str(request.path_params["name"])
    entry = STATIC_FILES.get(name)
    if entry is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    body, kind, digest = entry
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=86400",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=kind, headers=headers)
