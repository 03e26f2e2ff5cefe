"""How agents reach the MCP server: stdio for a local agent, streamable HTTP in the API.

**stdio** (``rsched mcp``): the agent starts the command and talks over its standard
input and output. The caller is the user of the API token in ``RSCHED_API_TOKEN``; the
token is checked at start (the command exits with an error when it is refused) and again
on every call, so revoking it stops the server's access at once. Logs go to standard
error (standard output is the protocol).

**Streamable HTTP** (``/mcp`` of the API, :func:`mount_mcp`): every request must carry
``Authorization: Bearer <API token>``. :class:`BearerGate` resolves the token to the
user's :class:`~rsched.services.access.Actor` (their roles now, limited to the token's
programs) before the MCP transport sees the request, and answers 401 problem details
otherwise: there is no unauthenticated path. The tools read the actor the gate put in
the request's scope. The endpoint is stateless (no MCP session kept in the process), as
every API process is: any process behind the load balancer answers any request.
Progress notifications of a call travel on that call's own response stream (SSE).

DNS-rebinding protection (Host/Origin checks) is off for the mounted endpoint: it exists
for servers that trust whoever can reach them, and this one trusts only bearer tokens,
which a browser never attaches on its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rsched.config import Settings
from rsched.db.base import make_engine, make_sessionmaker
from rsched.db.migrate import upgrade
from rsched.domain.errors import FieldError, InvalidInput
from rsched.mcp.server import Ctx, McpDeps, RschedMCP, build_server
from rsched.services.access import Actor, Unauthenticated
from rsched.services.api_tokens import actor_from_api_token, token_id
from rsched.services.auth import startup
from rsched.services.control import ControlStore, control_store

log = logging.getLogger("rsched.mcp")

TOKEN_ENV = "RSCHED_API_TOKEN"
ACTOR_KEY = "rsched.mcp.actor"
"""Where :class:`BearerGate` leaves the caller in the request scope's ``state``."""
MCP_PATH = "/mcp"
CHALLENGE = 'Bearer realm="rsched"'


@contextmanager
def _quiet_sdk_logging() -> Iterator[None]:
    """``MCPServer()`` calls ``logging.basicConfig`` when the root logger has no handler,
    which would reconfigure the logging of the process it is built in (the API, a
    test run). A stand-in handler for the moment of construction keeps it as is."""
    root = logging.getLogger()
    stand_in = logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(stand_in)
    try:
        yield
    finally:
        if added:
            root.removeHandler(stand_in)


def make_server(deps: McpDeps) -> RschedMCP:
    with _quiet_sdk_logging():
        return build_server(deps)


# ------------------------------------------------------------------------ HTTP


def request_actor(session: Session, ctx: Ctx) -> Actor:
    """The caller :class:`BearerGate` resolved for this HTTP request."""
    request = ctx.request_context.request
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    actor = state.get(ACTOR_KEY) if isinstance(state, dict) else None
    if not isinstance(actor, Actor):
        raise Unauthenticated("an API token is required (Authorization: Bearer …)")
    return actor


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if bytes(name).lower() == b"authorization":
            text = bytes(value).decode("latin-1").strip()
            scheme, _, credential = text.partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
            return None
    return None


class BearerGate:
    """ASGI middleware in front of the MCP endpoint: ``Authorization: Bearer <API token>``
    resolved to an :class:`Actor` for each request, or 401 problem details."""

    def __init__(self, app: ASGIApp, factory: sessionmaker[Session]) -> None:
        self.app = app
        self.factory = factory

    def _resolve(self, token: str) -> Actor:
        with self.factory() as session:
            try:
                return actor_from_api_token(session, token)
            finally:
                session.rollback()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is None:
            await _refuse(
                scope, receive, send, "an API token is required (Authorization: Bearer …)"
            )
            return
        try:
            actor = await anyio.to_thread.run_sync(self._resolve, token)
        except Unauthenticated as exc:
            await _refuse(scope, receive, send, str(exc), invalid=True)
            return
        scope.setdefault("state", {})[ACTOR_KEY] = actor
        # the SDK binds a stateful session to this principal (unused while stateless)
        ident = token_id(token) or actor.user_id
        scope["user"] = AuthenticatedUser(
            AccessToken(token=ident, client_id=ident, subject=actor.user_id, scopes=[])
        )
        await self.app(scope, receive, send)


async def _refuse(
    scope: Scope, receive: Receive, send: Send, detail: str, *, invalid: bool = False
) -> None:
    from rsched.api.errors import problem

    challenge = CHALLENGE + (', error="invalid_token"' if invalid else "")
    response = problem(
        Request(scope),
        401,
        kind="unauthenticated",
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )
    await response(scope, receive, send)


class McpEndpoint:
    """The streamable-HTTP endpoint: the bearer gate in front of the SDK's session
    manager. A new manager is made each time the app starts (a manager runs once)."""

    def __init__(self, server: RschedMCP, factory: sessionmaker[Session]) -> None:
        self.server = server
        self.manager: StreamableHTTPSessionManager | None = None
        self.gate = BearerGate(self._handle, factory)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.server.streamable_http_app(
            stateless_http=True,
            json_response=False,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = self.server.session_manager
        async with manager.run():
            self.manager = manager
            try:
                yield
            finally:
                self.manager = None

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self.manager
        if manager is None:
            from rsched.api.errors import problem

            response = problem(Request(scope), 503, detail="the MCP endpoint is not running")
            await response(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gate(scope, receive, send)


def http_deps(settings: Settings, factory: sessionmaker[Session], store: ControlStore) -> McpDeps:
    return McpDeps(settings=settings, factory=factory, store=store, actor_of=request_actor)


def mount_mcp(app: Any, *, path: str = MCP_PATH) -> McpEndpoint:
    """Serve the MCP server at ``path`` of a FastAPI/Starlette ``app`` whose state holds
    ``settings``, ``engine`` and ``sessionmaker`` (``rsched.api.app.create_app``): a
    route to the gated endpoint, and the session manager run by the app's lifespan."""
    settings: Settings = app.state.settings
    factory: sessionmaker[Session] = app.state.sessionmaker
    store = control_store(settings.redis_url, app.state.engine)
    endpoint = McpEndpoint(make_server(http_deps(settings, factory, store)), factory)
    app.router.routes.append(Route(path, endpoint=endpoint, methods=["GET", "POST", "DELETE"]))
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        async with inner(target) as state, endpoint.running():
            yield state

    app.router.lifespan_context = lifespan
    return endpoint


# ----------------------------------------------------------------------- stdio


def stdio_token() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise InvalidInput(
            FieldError(TOKEN_ENV, "an API token is required (`rsched token create --email …`)"),
            source="settings",
        )
    return token


def run_stdio(settings: Settings, token: str | None = None) -> None:
    """Serve MCP over standard input and output as the user of ``token`` (default
    ``RSCHED_API_TOKEN``) until the agent closes the connection."""
    from rsched.mcp.server import token_actor

    token = token if token is not None else stdio_token()
    startup(settings)
    url = settings.resolved_database_url()
    if settings.database_url is None:  # the embedded default: create and migrate it
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(url)
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        with factory() as session:  # refuse a bad token now, not at the first call
            actor = actor_from_api_token(session, token)
            session.rollback()
        log.info("mcp over stdio", extra={"user_id": actor.user_id, "token_id": token_id(token)})
        deps = McpDeps(
            settings=settings,
            factory=factory,
            store=control_store(settings.redis_url, engine),
            actor_of=token_actor(token),
        )
        anyio.run(make_server(deps).run_stdio_async)
    finally:
        engine.dispose()
