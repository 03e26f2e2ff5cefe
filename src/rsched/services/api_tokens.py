"""Scoped API tokens: long-lived, revocable credentials of one user for agents (the MCP
server), optionally limited to some of the user's programs.

An access JWT lives minutes and needs a password to renew; an agent needs a credential
that lasts weeks and can be taken back. An API token is ``rsat_<id>_<secret>``: the id
is not secret (it names the token in the audit log and for revocation), the secret is
32 random bytes, and only the SHA-256 of the whole token is stored, so it is shown once.

The caller behind a token is the token's user with the roles they hold **now** (read
from the database on every use, like an access token), narrowed to the token's programs
through ``Actor.scopes``: a token never grants more than its user has, and a program it
is not scoped to answers NotFound like any program the caller cannot see. An unknown,
malformed, revoked or expired token, or one of an inactive user, is refused with the
same ``Unauthenticated``.

Transactions: the caller owns the unit of work and commits on success.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.db.models import ApiTokenRow, MembershipRow, ProgramRow, UserRow
from rsched.domain.errors import FieldError, InvalidInput, NotFound
from rsched.services import audit
from rsched.services.access import Actor, Membership, Role, Unauthenticated

PREFIX = "rsat_"
MIN_DAYS = 1
MAX_DAYS = 365
MAX_PROGRAMS = 100
LABEL_MAX = 100
REFUSED = "invalid API token"
_TOKEN = re.compile(r"^rsat_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiTokenInfo:
    """What may be shown about a token (never the secret)."""

    id: str
    user_id: str
    label: str | None
    programs: tuple[str, ...] | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiTokenRow) -> ApiTokenInfo:
        return cls(
            id=row.id,
            user_id=row.user_id,
            label=row.label,
            programs=tuple(row.programs) if row.programs is not None else None,
            created_by=row.created_by,
            created_at=_aware(row.created_at),
            expires_at=_aware(row.expires_at),
            revoked_at=_aware(row.revoked_at) if row.revoked_at is not None else None,
        )


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id(token: str) -> str | None:
    """The id inside a well-formed token (not secret), else None."""
    match = _TOKEN.match(token) if isinstance(token, str) else None
    return match.group(1) if match else None


def _memberships(session: Session, user_id: str) -> dict[str, Membership]:
    rows = session.scalars(select(MembershipRow).where(MembershipRow.user_id == user_id))
    return {r.program_id: Membership(role=Role(r.role), person_id=r.person_id) for r in rows}


def create_api_token(
    session: Session,
    *,
    actor: Actor,
    user_id: str,
    programs: list[str] | None,
    expires_days: int,
    label: str | None = None,
) -> str:
    """A new token for ``user_id`` (returned once; only its hash is kept). A user makes
    tokens for themselves, an admin for anyone. ``programs`` limits the token to those
    programs, each of which the user must be able to see now; None means every program
    of the user (as their roles change)."""
    if actor.user_id != user_id and not actor.is_admin:
        raise NotFound(f"user {user_id!r} not found")
    user = session.get(UserRow, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    errors: list[FieldError] = []
    if not user.active:
        errors.append(FieldError("user_id", "the user is inactive"))
    if isinstance(expires_days, bool) or not isinstance(expires_days, int):
        errors.append(FieldError("expires_days", "must be a whole number of days"))
    elif not MIN_DAYS <= expires_days <= MAX_DAYS:
        errors.append(FieldError("expires_days", f"must be {MIN_DAYS}..{MAX_DAYS}"))
    if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= LABEL_MAX):
        errors.append(FieldError("label", f"1-{LABEL_MAX} characters"))
    scoped: list[str] | None = None
    if programs is not None:
        if not programs:
            errors.append(FieldError("programs", "name at least one program, or leave it out"))
        elif len(programs) > MAX_PROGRAMS:
            errors.append(FieldError("programs", f"at most {MAX_PROGRAMS} programs"))
        else:
            memberships = _memberships(session, user_id)
            for i, pid in enumerate(programs):
                visible = isinstance(pid, str) and (
                    pid in memberships
                    or (user.is_admin and session.get(ProgramRow, pid) is not None)
                )
                if not visible:
                    errors.append(FieldError(f"programs[{i}]", f"the user has no program {pid!r}"))
            scoped = sorted({p for p in programs if isinstance(p, str)})
    if errors:
        raise InvalidInput(errors)
    row_id = uuid.uuid4().hex
    token = f"{PREFIX}{row_id}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    session.add(
        ApiTokenRow(
            id=row_id,
            user_id=user_id,
            token_hash=_digest(token),
            label=label,
            programs=scoped,
            created_by=actor.user_id,
            created_at=now,
            expires_at=now + timedelta(days=expires_days),
            revoked_at=None,
        )
    )
    audit.record(
        session,
        actor=actor,
        action="api_token.create",
        target=row_id,
        detail={"user_id": user_id, "programs": scoped, "expires_days": expires_days},
    )
    return token


def actor_from_api_token(session: Session, token: str) -> Actor:
    """The caller behind an API token: its user with their memberships as they are now,
    limited to the token's programs. ``Unauthenticated`` for anything else."""
    row_id = token_id(token)
    row = session.get(ApiTokenRow, row_id) if row_id is not None else None
    if row is None or not hmac.compare_digest(row.token_hash, _digest(token)):
        raise Unauthenticated(REFUSED)
    if row.revoked_at is not None or _aware(row.expires_at) <= datetime.now(UTC):
        raise Unauthenticated(REFUSED)
    user = session.get(UserRow, row.user_id)
    if user is None or not user.active:
        raise Unauthenticated(REFUSED)
    return Actor(
        user_id=user.id,
        is_admin=user.is_admin,
        memberships=_memberships(session, user.id),
        scopes=frozenset(row.programs) if row.programs is not None else None,
    )


def revoke_api_token(session: Session, *, actor: Actor, token_id: str) -> ApiTokenInfo:
    """Revoke a token by its id (its owner or an admin); revoking twice is harmless.
    Someone else's token answers NotFound, like a token that does not exist."""
    row = session.get(ApiTokenRow, token_id) if isinstance(token_id, str) else None
    if row is None or (row.user_id != actor.user_id and not actor.is_admin):
        raise NotFound(f"API token {token_id!r} not found")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        audit.record(
            session,
            actor=actor,
            action="api_token.revoke",
            target=row.id,
            detail={"user_id": row.user_id},
        )
    session.flush()
    return ApiTokenInfo.of(row)


def list_api_tokens(session: Session, *, actor: Actor, user_id: str) -> list[ApiTokenInfo]:
    """A user's tokens, newest first (their owner or an admin)."""
    if actor.user_id != user_id and not actor.is_admin:
        raise NotFound(f"user {user_id!r} not found")
    rows = session.scalars(
        select(ApiTokenRow)
        .where(ApiTokenRow.user_id == user_id)
        .order_by(ApiTokenRow.created_at.desc(), ApiTokenRow.id)
    )
    return [ApiTokenInfo.of(r) for r in rows]
