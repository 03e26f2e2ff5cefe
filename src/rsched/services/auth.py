"""Authentication: argon2 password hashes, short-lived JWT access tokens and rotating
refresh tokens, a durable login rate limit, and the secrets the service starts with.

- Access tokens are HMAC-signed JWTs (``sub``, ``iat``, ``exp``, ``jti``, ``typ=access``);
  decoding accepts only ``settings.jwt_algorithm``, never the algorithm a token names.
  The user is re-read on every request, so an inactive user is refused at once even
  with a token that has not expired.
- A refresh token is a random 32-byte secret; only its SHA-256 is stored, with a family
  id. Each refresh marks the presented token used (a conditional update, so two
  concurrent refreshes cannot both win) and issues the next one in the same family.
  Presenting a used token again means it was stolen or replayed: the whole family is
  revoked and the event audited.
- Failed logins are rows of ``login_attempts`` (shared by every API process). Once an
  email has ``login_attempts_per_window`` failures within ``login_window_seconds``,
  further attempts are refused with ``RateLimited`` until the oldest leaves the window,
  even with the right password. A successful login clears the email's failures.
- Every failure looks the same to the caller (``Unauthenticated("invalid email or
  password")``) and costs the same: an unknown email is checked against a dummy hash.

Transactions: the caller owns the unit of work (``rsched.db.base.transaction``) and
commits on success. Refusals that must survive the caller's rollback (failed-login
records, audit rows, a revoked family) are committed here before the error is raised.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn, cast

import jwt
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from rsched.config import Settings, is_weak_secret, weak_secret
from rsched.crypto.fields import install_keys, new_key, parse_keys
from rsched.db.models import LoginAttemptRow, MembershipRow, RefreshTokenRow, UserRow
from rsched.domain.errors import FieldError, InvalidInput, RschedError
from rsched.services import audit
from rsched.services.access import Actor, Membership, Role, Unauthenticated

ACCESS = "access"
LOGIN_REFUSED = "invalid email or password"
REQUIRED_CLAIMS = ("sub", "iat", "exp", "jti", "typ")
CLOCK_LEEWAY_SECONDS = 5
"""Tolerated clock difference between API hosts when checking ``iat`` and ``exp``."""
HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
"""RFC 7518 §3.2: an HMAC key at least as long as the hash output."""
DEV_KEY_FILE = ".encryption_key"
MIN_DISTINCT_KEY_BYTES = 8
"""A random 32-byte key has about 28 distinct bytes; fewer than this is a made-up key."""

_HASHER = PasswordHash((Argon2Hasher(),))


class RateLimited(RschedError):
    """Too many failed logins for one email; ``retry_after`` is in seconds (HTTP 429)."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"too many failed logins for this email: try again in {retry_after} seconds"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    """Lifetime of the access token in seconds."""
    token_type: str = "bearer"


# --- passwords -------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Whether the password matches, and a new hash when the stored one uses outdated
    parameters (to be saved by the caller). An unreadable hash never matches."""
    try:
        return _HASHER.verify_and_update(password, password_hash)
    except UnknownHashError:
        return False, None


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(24))


# --- access tokens ---------------------------------------------------------------------


def jwt_secret(settings: Settings) -> str:
    """The signing secret: configured, or in development a per-install secret kept in
    ``data_dir`` (created once, never a constant)."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.is_dev:
        return settings.dev_secret("jwt_secret")
    raise InvalidInput(
        FieldError("RSCHED_JWT_SECRET", "required outside development"), source="settings"
    )


def issue_access_token(settings: Settings, user_id: str, *, now: datetime | None = None) -> str:
    issued = now or datetime.now(UTC)
    expires = issued + timedelta(minutes=settings.access_token_minutes)
    claims = {
        "sub": user_id,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": ACCESS,
    }
    return jwt.encode(claims, jwt_secret(settings), algorithm=settings.jwt_algorithm)


def decode_access_token(settings: Settings, token: str) -> dict[str, Any]:
    """The claims of a valid access token; ``Unauthenticated`` for anything else (bad
    signature, another algorithm or ``none``, expired, missing claims, not an access
    token)."""
    try:
        claims = jwt.decode(
            token,
            jwt_secret(settings),
            algorithms=[settings.jwt_algorithm],
            options={"require": list(REQUIRED_CLAIMS)},
            leeway=CLOCK_LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("access token expired") from None
    except jwt.PyJWTError:
        raise Unauthenticated("invalid access token") from None
    if claims.get("typ") != ACCESS or not isinstance(claims.get("sub"), str):
        raise Unauthenticated("invalid access token")
    return claims


def actor_from_access_token(session: Session, settings: Settings, token: str) -> Actor:
    """The caller behind an access token, with memberships read now from the database;
    ``Unauthenticated`` for a bad token or an unknown or inactive user."""
    claims = decode_access_token(settings, token)
    rows = session.execute(  # on every authenticated request: one query, plain rows
        select(
            UserRow.active,
            UserRow.is_admin,
            MembershipRow.program_id,
            MembershipRow.role,
            MembershipRow.person_id,
        )
        .outerjoin(MembershipRow, MembershipRow.user_id == UserRow.id)
        .where(UserRow.id == claims["sub"])
    ).all()
    if not rows or not rows[0].active:
        raise Unauthenticated("the account is inactive or no longer exists")
    memberships = {
        r.program_id: Membership(role=Role(r.role), person_id=r.person_id)
        for r in rows
        if r.program_id is not None
    }
    return Actor(user_id=str(claims["sub"]), is_admin=rows[0].is_admin, memberships=memberships)


# --- login, refresh, logout ------------------------------------------------------------


def login(session: Session, settings: Settings, *, email: str, password: str) -> TokenPair:
    now = datetime.now(UTC)
    address = normalize_email(email)
    retry_after = _rate_limited_for(session, settings, address, now)
    if retry_after is not None:
        audit.record(
            session,
            actor=None,
            action="auth.login",
            target=address,
            detail={"reason": "rate_limited", "retry_after": retry_after},
            outcome="refused",
        )
        session.commit()
        raise RateLimited(retry_after)

    user = session.scalars(select(UserRow).where(UserRow.email == address)).one_or_none()
    if user is None:
        verify_password(password, _dummy_hash())  # same cost as a known email
        reason = "unknown_email"
    else:
        ok, new_hash = verify_password(password, user.password_hash)
        if ok and user.active:
            if new_hash is not None:
                user.password_hash = new_hash
            session.execute(delete(LoginAttemptRow).where(LoginAttemptRow.email == address))
            pair = _issue_pair(session, settings, user.id, family=uuid.uuid4().hex, now=now)
            audit.record(session, actor=user.id, action="auth.login", target=user.id)
            return pair
        reason = "inactive" if ok else "wrong_password"

    session.add(LoginAttemptRow(email=address, at=now))
    audit.record(
        session,
        actor=None,
        action="auth.login",
        target=address,
        detail={"reason": reason, "user_id": user.id if user else None},
        outcome="refused",
    )
    session.commit()
    raise Unauthenticated(LOGIN_REFUSED)


def refresh(session: Session, settings: Settings, refresh_token: str) -> TokenPair:
    """Exchange a refresh token for a new pair; the presented token is used up."""
    now = datetime.now(UTC)
    row = session.scalars(
        select(RefreshTokenRow).where(RefreshTokenRow.token_hash == _digest(refresh_token))
    ).one_or_none()
    if row is None:
        _refuse_refresh(session, None, "unknown")
    if row.revoked:
        _refuse_refresh(session, row, "revoked")
    if row.used_at is not None:
        _refuse_refresh(session, row, "reuse", revoke=True)
    if _aware(row.expires_at) <= now:
        _refuse_refresh(session, row, "expired")
    user = session.get(UserRow, row.user_id)
    if user is None or not user.active:
        _refuse_refresh(session, row, "inactive", revoke=True)

    claimed = cast(
        CursorResult[Any],
        session.execute(
            update(RefreshTokenRow)
            .where(
                RefreshTokenRow.id == row.id,
                RefreshTokenRow.used_at.is_(None),
                RefreshTokenRow.revoked.is_(False),
            )
            .values(used_at=now)
        ),
    )
    if claimed.rowcount != 1:  # another request used it first: treat as reuse
        _refuse_refresh(session, row, "reuse", revoke=True)
    return _issue_pair(session, settings, user.id, family=row.family, now=now)


def logout(session: Session, refresh_token: str) -> None:
    """Revoke the refresh token's whole family (this device's session). Unknown tokens
    are ignored, so logging out twice is harmless. Access tokens already issued stay
    valid until they expire (minutes)."""
    row = session.scalars(
        select(RefreshTokenRow).where(RefreshTokenRow.token_hash == _digest(refresh_token))
    ).one_or_none()
    if row is None:
        return
    _revoke_family(session, row.family)
    audit.record(session, actor=row.user_id, action="auth.logout", target=row.user_id)


def revoke_user_tokens(session: Session, user_id: str) -> None:
    """Revoke every refresh token of a user (deactivation, password change)."""
    session.execute(
        update(RefreshTokenRow).where(RefreshTokenRow.user_id == user_id).values(revoked=True)
    )


def _issue_pair(
    session: Session, settings: Settings, user_id: str, *, family: str, now: datetime
) -> TokenPair:
    token = secrets.token_urlsafe(32)
    session.add(
        RefreshTokenRow(
            id=uuid.uuid4().hex,
            user_id=user_id,
            family=family,
            token_hash=_digest(token),
            expires_at=now + timedelta(days=settings.refresh_token_days),
            used_at=None,
            revoked=False,
        )
    )
    return TokenPair(
        access_token=issue_access_token(settings, user_id, now=now),
        refresh_token=token,
        expires_in=settings.access_token_minutes * 60,
    )


def _refuse_refresh(
    session: Session, row: RefreshTokenRow | None, reason: str, *, revoke: bool = False
) -> NoReturn:
    if row is not None and revoke:
        _revoke_family(session, row.family)
    audit.record(
        session,
        actor=row.user_id if row else None,
        action="auth.refresh_reuse" if reason == "reuse" else "auth.refresh",
        target=row.family if row else None,
        detail={"reason": reason, "family_revoked": bool(row is not None and revoke)},
        outcome="refused",
    )
    session.commit()
    raise Unauthenticated("invalid refresh token")


def _revoke_family(session: Session, family: str) -> None:
    session.execute(
        update(RefreshTokenRow).where(RefreshTokenRow.family == family).values(revoked=True)
    )


def _rate_limited_for(
    session: Session, settings: Settings, address: str, now: datetime
) -> int | None:
    """Seconds until another attempt is allowed, or None when it is allowed now."""
    window = timedelta(seconds=settings.login_window_seconds)
    failures = [
        _aware(at)
        for at in session.scalars(
            select(LoginAttemptRow.at)
            .where(LoginAttemptRow.email == address, LoginAttemptRow.at > now - window)
            .order_by(LoginAttemptRow.at)
        )
    ]
    limit = max(settings.login_attempts_per_window, 1)
    if len(failures) < limit:
        return None
    frees_at = failures[len(failures) - limit] + window
    return max(1, math.ceil((frees_at - now).total_seconds()))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- encryption keys and start-up ------------------------------------------------------


def encryption_keys(settings: Settings) -> list[str]:
    """The Fernet keys, newest first: ``RSCHED_ENCRYPTION_KEYS``, or in development a
    per-install key file in ``data_dir`` created once. Never an ephemeral key: data
    encrypted with a key that is lost is lost."""
    if settings.encryption_keys is not None:
        keys = parse_keys(settings.encryption_keys)
        _check_keys(keys, strict=not settings.is_dev)
        return keys
    if not settings.is_dev:
        raise InvalidInput(
            FieldError(
                "RSCHED_ENCRYPTION_KEYS", "required outside development (never an ephemeral key)"
            ),
            source="settings",
        )
    return [_dev_key(settings.data_dir)]


def startup(settings: Settings) -> None:
    """Refuse unsafe settings, then install the encryption keys. Every process that
    serves requests or runs jobs calls this once before touching the database."""
    settings.check_for_service()
    if not settings.is_dev and settings.bootstrap_admin_secret is not None:
        if is_weak_secret(settings.bootstrap_admin_secret):
            raise InvalidInput(weak_secret("RSCHED_BOOTSTRAP_ADMIN_SECRET"), source="settings")
    secret = jwt_secret(settings)
    needed = HMAC_KEY_BYTES[settings.jwt_algorithm]
    if not settings.is_dev and len(secret.encode()) < needed:
        raise InvalidInput(
            FieldError(
                "RSCHED_JWT_SECRET",
                f"{settings.jwt_algorithm} needs a secret of at least {needed} bytes",
            ),
            source="settings",
        )
    install_keys(encryption_keys(settings))
    _dummy_hash()


def _check_keys(keys: list[str], *, strict: bool) -> None:
    errors: list[FieldError] = []
    if not keys:
        errors.append(FieldError("RSCHED_ENCRYPTION_KEYS", "at least one key is needed"))
    seen: set[bytes] = set()
    for i, key in enumerate(keys):
        path = f"RSCHED_ENCRYPTION_KEYS[{i}]"
        raw = _key_bytes(key)
        if raw is None:
            errors.append(FieldError(path, "not a Fernet key (`rsched keys new` makes one)"))
            continue
        if raw in seen:
            errors.append(FieldError(path, "the same key is listed twice"))
        seen.add(raw)
        if strict and len(set(raw)) < MIN_DISTINCT_KEY_BYTES:
            errors.append(FieldError(path, "placeholder key: use `rsched keys new`"))
    if errors:
        raise InvalidInput(errors, source="settings")


def _key_bytes(key: str) -> bytes | None:
    try:
        raw = base64.urlsafe_b64decode(key.encode())
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _dev_key(data_dir: Path) -> str:
    """The development key file, created atomically once (two processes starting
    together agree on one key)."""
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f"{DEV_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_key())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process got there first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if _key_bytes(key) is None:
        raise InvalidInput(FieldError(str(path), "not a Fernet key"), source="settings")
    return key
