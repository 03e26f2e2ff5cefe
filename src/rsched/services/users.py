"""Users and their roles in programs. There is no default admin: the first one is made by
``rsched admin create`` (someone with access to the database) or by ``bootstrap_admin``
with the one-time secret from settings, which works only while no admin exists.

The caller owns the unit of work (``rsched.db.base.transaction``); refused bootstrap
attempts are committed here (audit row) before the error is raised."""

from __future__ import annotations

import hmac
import re
import uuid
from datetime import UTC, datetime
from typing import NoReturn

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from rsched.config import Settings, is_weak_secret, weak_secret
from rsched.db.models import MembershipRow, PersonRow, ProgramRow, UserRow
from rsched.domain.errors import FieldError, InvalidInput, NotFound
from rsched.services import audit
from rsched.services.access import Actor, Forbidden, Role, Unauthenticated
from rsched.services.auth import hash_password, normalize_email, revoke_user_tokens

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
MAX_EMAIL_CHARS = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_BOOTSTRAP_LOCK = 0x72736368_6564_0001
"""PostgreSQL advisory lock key serialising concurrent bootstrap attempts."""
PERSON_ROLES = frozenset({Role.FACULTY, Role.RESIDENT})


def email_problems(email: str) -> list[FieldError]:
    address = normalize_email(email)
    if len(address) > MAX_EMAIL_CHARS:
        return [FieldError("email", f"at most {MAX_EMAIL_CHARS} characters")]
    if not _EMAIL.fullmatch(address):
        return [FieldError("email", f"not an email address: {email!r}")]
    return []


def password_problems(password: str, *, email: str) -> list[FieldError]:
    """Why a password is refused: shorter than 12 characters, all of one kind (only lower
    case, only digits, ...), or the email address (or its local part)."""
    errors: list[FieldError] = []
    if len(password) < MIN_PASSWORD_CHARS:
        errors.append(FieldError("password", f"at least {MIN_PASSWORD_CHARS} characters"))
    if len(password) > MAX_PASSWORD_CHARS:
        errors.append(FieldError("password", f"at most {MAX_PASSWORD_CHARS} characters"))
    kinds = {
        "lower" if c.islower() else "upper" if c.isupper() else "digit" if c.isdigit() else "other"
        for c in password
    }
    if password and len(kinds) < 2:
        errors.append(
            FieldError(
                "password",
                "mix at least two kinds of characters (lower case, upper case, digits, symbols)",
            )
        )
    address = normalize_email(email)
    candidate = password.strip().lower()
    if candidate and candidate in {address, address.partition("@")[0]}:
        errors.append(FieldError("password", "must not be the email address"))
    return errors


def create_user(session: Session, *, email: str, password: str, is_admin: bool = False) -> str:
    """Add a user and return its id; ``InvalidInput`` lists every problem with the email
    and the password."""
    address = normalize_email(email)
    errors = email_problems(address) + password_problems(password, email=address)
    if not errors:
        taken = session.scalars(select(UserRow.id).where(UserRow.email == address)).first()
        if taken is not None:
            errors.append(FieldError("email", "already registered"))
    if errors:
        raise InvalidInput(errors, source="user")
    user_id = uuid.uuid4().hex
    session.add(
        UserRow(
            id=user_id,
            email=address,
            password_hash=hash_password(password),
            is_admin=is_admin,
            active=True,
            created_at=datetime.now(UTC),
        )
    )
    session.flush()
    return user_id


def add_membership(
    session: Session,
    *,
    user_id: str,
    program_id: str,
    role: Role | str,
    person_id: str | None = None,
    actor: Actor | str | None = None,
) -> None:
    """Give a user a role in a program (replacing the one they had there). Faculty and
    residents are linked to their person of that program, of the same kind, and one
    person belongs to at most one user."""
    try:
        wanted = Role(role)
    except ValueError:
        raise InvalidInput(
            FieldError("role", "must be one of coordinator, faculty, resident")
        ) from None
    if wanted is Role.ADMIN:
        raise InvalidInput(FieldError("role", "admin is a property of the user, not a role"))
    if session.get(UserRow, user_id) is None:
        raise NotFound(f"user {user_id!r} not found")
    if session.get(ProgramRow, program_id) is None:
        raise NotFound(f"program {program_id!r} not found")
    if wanted in PERSON_ROLES and person_id is None:
        raise InvalidInput(
            FieldError("person_id", f"a {wanted} membership needs the person they are")
        )
    if person_id is not None:
        _check_person(
            session, user_id=user_id, program_id=program_id, person_id=person_id, role=wanted
        )
    row = session.get(MembershipRow, (user_id, program_id))
    if row is None:
        session.add(
            MembershipRow(
                user_id=user_id, program_id=program_id, role=wanted.value, person_id=person_id
            )
        )
    else:
        row.role = wanted.value
        row.person_id = person_id
    audit.record(
        session,
        actor=actor,
        action="membership.set",
        program_id=program_id,
        target=user_id,
        detail={"role": wanted.value, "person_id": person_id},
    )
    session.flush()


def _check_person(
    session: Session, *, user_id: str, program_id: str, person_id: str, role: Role
) -> None:
    kind = session.scalars(
        select(PersonRow.kind).where(PersonRow.program_id == program_id, PersonRow.id == person_id)
    ).first()
    if kind is None:
        raise InvalidInput(
            FieldError("person_id", f"no person {person_id!r} in program {program_id!r}")
        )
    if role in PERSON_ROLES and kind != role.value:
        raise InvalidInput(
            FieldError("person_id", f"person {person_id!r} is {kind}, not {role.value}")
        )
    other = session.scalars(
        select(MembershipRow.user_id).where(
            MembershipRow.program_id == program_id,
            MembershipRow.person_id == person_id,
            MembershipRow.user_id != user_id,
        )
    ).first()
    if other is not None:
        raise InvalidInput(
            FieldError("person_id", f"person {person_id!r} is already linked to another user")
        )


def set_active(
    session: Session, *, user_id: str, active: bool, actor: Actor | str | None = None
) -> None:
    """Activate or deactivate a user. A deactivated user is refused at login, on refresh
    (every refresh token is revoked) and with any access token still unexpired."""
    user = session.get(UserRow, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    user.active = active
    if not active:
        revoke_user_tokens(session, user_id)
    audit.record(
        session,
        actor=actor,
        action="user.activate" if active else "user.deactivate",
        target=user_id,
    )
    session.flush()


def bootstrap_admin(
    session: Session, settings: Settings, *, secret: str, email: str, password: str
) -> str:
    """Create the first admin with the bootstrap secret from settings. Refused when the
    secret is not configured or weak, does not match (constant-time comparison), or an
    admin already exists. Every attempt is audited."""
    configured = settings.bootstrap_admin_secret
    if not configured:
        _refuse_bootstrap(session, "disabled", Forbidden("bootstrap is disabled (no secret)"))
    if is_weak_secret(configured):
        _refuse_bootstrap(
            session,
            "weak_secret",
            InvalidInput(weak_secret("RSCHED_BOOTSTRAP_ADMIN_SECRET"), source="settings"),
        )
    if not hmac.compare_digest(secret.encode(), configured.encode()):
        _refuse_bootstrap(session, "bad_secret", Unauthenticated("wrong bootstrap secret"))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _BOOTSTRAP_LOCK})
    if session.scalars(select(UserRow.id).where(UserRow.is_admin.is_(True))).first():
        _refuse_bootstrap(
            session, "admin_exists", Forbidden("an admin already exists: bootstrap is closed")
        )
    user_id = create_user(session, email=email, password=password, is_admin=True)
    audit.record(session, actor=user_id, action="auth.bootstrap_admin", target=user_id)
    return user_id


def _refuse_bootstrap(session: Session, reason: str, error: Exception) -> NoReturn:
    audit.record(
        session,
        actor=None,
        action="auth.bootstrap_admin",
        detail={"reason": reason},
        outcome="refused",
    )
    session.commit()
    raise error
