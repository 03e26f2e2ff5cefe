"""Who may do what, decided in one place. Every service call takes an ``Actor`` and asks
``authorize`` before touching a program's rows; a program the actor cannot see answers
NotFound (404), never the object and never 403, so ids of other tenants do not leak."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from rsched.domain.errors import NotFound, RschedError


class Role(StrEnum):
    ADMIN = "admin"
    COORDINATOR = "coordinator"
    FACULTY = "faculty"
    RESIDENT = "resident"


class Need(IntEnum):
    """What an operation needs, from least to most."""

    READ_PUBLISHED = 1
    """Read the program's published schedule and one's own details; submit requests."""
    MANAGE = 2
    """Everything within the program (coordinator)."""
    ADMIN = 3
    """Across programs (admin only)."""


class Forbidden(RschedError):
    """The actor can see the program but may not do this (HTTP 403)."""


class Unauthenticated(RschedError):
    """No valid credentials (HTTP 401)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    role: Role
    person_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    user_id: str
    is_admin: bool = False
    memberships: dict[str, Membership] = field(default_factory=dict)
    scopes: frozenset[str] | None = None
    """For API tokens: the program ids the token is limited to (None: the user's own)."""

    def role_in(self, program_id: str) -> Role | None:
        if self.scopes is not None and program_id not in self.scopes:
            return None
        if self.is_admin:
            return Role.ADMIN
        m = self.memberships.get(program_id)
        return m.role if m else None

    def person_in(self, program_id: str) -> str | None:
        m = self.memberships.get(program_id)
        return m.person_id if m else None

    def visible_programs(self) -> set[str] | None:
        """Program ids the actor may see; None means all (admin)."""
        if self.is_admin and self.scopes is None:
            return None
        ids = set(self.memberships) if not self.is_admin else set(self.scopes or ())
        return ids & self.scopes if self.scopes is not None else ids


def authorize(actor: Actor, program_id: str, need: Need) -> Role:
    """The actor's role in ``program_id`` if it allows ``need``; NotFound when the program
    is not visible to the actor, Forbidden when visible but not allowed."""
    role = actor.role_in(program_id)
    if role is None:
        raise NotFound(f"program {program_id!r} not found")
    allowed = {
        Need.READ_PUBLISHED: {Role.ADMIN, Role.COORDINATOR, Role.FACULTY, Role.RESIDENT},
        Need.MANAGE: {Role.ADMIN, Role.COORDINATOR},
        Need.ADMIN: {Role.ADMIN},
    }[need]
    if role not in allowed:
        raise Forbidden(f"role {role} may not do this in program {program_id!r}")
    return role
