"""ORM tables. Every program-owned row carries ``program_id`` first in its key and its
indexes, so a later split by program needs no code change. Sensitive fields are
``EncryptedText`` (military_status, accommodation_notes, leave_type)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from rsched.crypto.fields import EncryptedText
from rsched.db.base import Base

ID = String(64)


class ProgramRow(Base):
    __tablename__ = "programs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    academic_year_start: Mapped[date] = mapped_column(Date)
    block_length_days: Mapped[int] = mapped_column(Integer, default=28)
    horizon_start: Mapped[date] = mapped_column(Date)
    horizon_end: Mapped[date] = mapped_column(Date)
    periods: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PersonRow(Base):
    __tablename__ = "people"
    program_id: Mapped[str] = mapped_column(
        ID, ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    pgy: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    military_status: Mapped[str | None] = mapped_column(EncryptedText, nullable=True)
    accommodation_notes: Mapped[str | None] = mapped_column(EncryptedText, nullable=True)


class ShiftTypeRow(Base):
    __tablename__ = "shift_types"
    program_id: Mapped[str] = mapped_column(
        ID, ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True
    )
    code: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    start: Mapped[str] = mapped_column(String(5))
    duration_minutes: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    counts_toward_hours: Mapped[bool] = mapped_column(Boolean, default=True)
    eligible_pgy: Mapped[list[int]] = mapped_column(JSON, default=list)
    required_tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    faculty: Mapped[bool] = mapped_column(Boolean, default=False)


class RotationRow(Base):
    __tablename__ = "rotations"
    program_id: Mapped[str] = mapped_column(
        ID, ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    eligible_pgy: Mapped[list[int]] = mapped_column(JSON, default=list)
    min_residents: Mapped[int] = mapped_column(Integer)
    max_residents: Mapped[int] = mapped_column(Integer)
    shift_types: Mapped[list[str]] = mapped_column(JSON, default=list)


class RotationAssignmentRow(Base):
    __tablename__ = "rotation_assignments"
    program_id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ID, primary_key=True)
    block: Mapped[int] = mapped_column(Integer, primary_key=True)
    rotation_id: Mapped[str] = mapped_column(ID)
    __table_args__ = (
        ForeignKeyConstraint(
            ["program_id", "person_id"], ["people.program_id", "people.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["program_id", "rotation_id"],
            ["rotations.program_id", "rotations.id"],
            ondelete="CASCADE",
        ),
    )


class SlotPatternRow(Base):
    """A pattern as written in the program file (kept so a program can be re-expanded)."""

    __tablename__ = "slot_patterns"
    program_id: Mapped[str] = mapped_column(
        ID, ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)


class SlotRow(Base):
    __tablename__ = "slots"
    program_id: Mapped[str] = mapped_column(
        ID, ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    shift: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(32))
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    day: Mapped[date] = mapped_column(Date)
    """Local date of the start (the grid's column)."""
    min_staff: Mapped[int] = mapped_column(Integer)
    max_staff: Mapped[int] = mapped_column(Integer)
    staff_kind: Mapped[str] = mapped_column(String(16), default="resident")
    pgy_min: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    supervision: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    faculty_max: Mapped[int] = mapped_column(Integer, default=0)
    counts_toward_hours: Mapped[bool] = mapped_column(Boolean, default=True)
    __table_args__ = (Index("ix_slots_program_day", "program_id", "day"),)


class AbsenceRow(Base):
    __tablename__ = "absences"
    program_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ID)
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    leave_type: Mapped[str] = mapped_column(EncryptedText)
    blocking: Mapped[bool] = mapped_column(Boolean, default=True)
    __table_args__ = (
        ForeignKeyConstraint(
            ["program_id", "person_id"], ["people.program_id", "people.id"], ondelete="CASCADE"
        ),
        Index("ix_absences_program_person", "program_id", "person_id", "start"),
    )


class RequestRow(Base):
    __tablename__ = "requests"
    program_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ID)
    day: Mapped[date] = mapped_column(Date)
    wants: Mapped[bool] = mapped_column(Boolean)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    shift: Mapped[str | None] = mapped_column(ID, nullable=True)
    __table_args__ = (
        ForeignKeyConstraint(
            ["program_id", "person_id"], ["people.program_id", "people.id"], ondelete="CASCADE"
        ),
    )


class ScheduleVersionRow(Base):
    __tablename__ = "schedule_versions"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    program_id: Mapped[str] = mapped_column(
        ID, ForeignKey("programs.id", ondelete="CASCADE"), index=True
    )
    start: Mapped[date] = mapped_column(Date)
    end: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(ID, nullable=True)
    __table_args__ = (Index("ix_versions_program_status", "program_id", "status"),)


class AssignmentRow(Base):
    __tablename__ = "assignments"
    program_id: Mapped[str] = mapped_column(ID, primary_key=True)
    version_id: Mapped[str] = mapped_column(
        ID, ForeignKey("schedule_versions.id", ondelete="CASCADE"), primary_key=True
    )
    person_id: Mapped[str] = mapped_column(ID, primary_key=True)
    slot_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(16), default="solver")
    __table_args__ = (
        Index("ix_assignments_program_day", "program_id", "version_id", "day"),
        Index("ix_assignments_person_day", "program_id", "person_id", "day"),
    )


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MembershipRow(Base):
    """A user's role in one program (coordinator, faculty, resident), and for faculty and
    residents the person they are."""

    __tablename__ = "memberships"
    user_id: Mapped[str] = mapped_column(
        ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    program_id: Mapped[str] = mapped_column(
        ID, ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))
    person_id: Mapped[str | None] = mapped_column(ID, nullable=True)


class RefreshTokenRow(Base):
    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(ID, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class FeedTokenRow(Base):
    """A secret ICS feed URL for one person; only its hash is stored."""

    __tablename__ = "feed_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    program_id: Mapped[str] = mapped_column(ID, index=True)
    person_id: Mapped[str] = mapped_column(ID)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    __table_args__ = (
        ForeignKeyConstraint(
            ["program_id", "person_id"], ["people.program_id", "people.id"], ondelete="CASCADE"
        ),
    )


class LoginAttemptRow(Base):
    """Failed logins, for the rate limit (durable, shared by every API process)."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str | None] = mapped_column(ID, nullable=True)
    program_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")


class RunRow(Base):
    """One solve job. ``attempt`` is the fencing token: every write of a worker names the
    attempt it claimed, and a write for an older attempt changes nothing."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    program_id: Mapped[str] = mapped_column(ID, ForeignKey("programs.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    algorithm: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requested_by: Mapped[str | None] = mapped_column(ID, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    best_objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_transient: Mapped[bool] = mapped_column(Boolean, default=False)
    abort_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    abort_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    abort_by: Mapped[str | None] = mapped_column(ID, nullable=True)
    result_version_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    __table_args__ = (
        UniqueConstraint("program_id", "idempotency_key", name="uq_runs_program_key"),
        Index("ix_runs_state_created", "state", "created_at"),
        Index("ix_runs_program_state", "program_id", "state"),
    )


class RunCheckpointRow(Base):
    """An improving solution of a run, hash-verified on read."""

    __tablename__ = "run_checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ID, ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    program_id: Mapped[str] = mapped_column(ID)
    attempt: Mapped[int] = mapped_column(Integer)
    objective: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ControlRow(Base):
    """The embedded control store: abort flags and live progress, with an expiry."""

    __tablename__ = "control"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LeaseRow(Base):
    """A named lease (the maintenance leader): holder and epoch fence the holder's writes."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PublishTokenRow(Base):
    """A one-time publish token bound to (draft, program, user); only its hash is stored."""

    __tablename__ = "publish_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    program_id: Mapped[str] = mapped_column(ID, index=True)
    version_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StagingRow(Base):
    """Write-ahead record of a publish: pending until the activation commits."""

    __tablename__ = "publish_staging"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    program_id: Mapped[str] = mapped_column(ID, index=True)
    version_id: Mapped[str] = mapped_column(ID)
    previous_active: Mapped[list[str]] = mapped_column(JSON, default=list)
    checksum: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16), default="publish")
    actor: Mapped[str | None] = mapped_column(ID, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    __table_args__ = (Index("ix_staging_state", "state"),)


class StagingBackupRow(Base):
    """The rows a publish will change, as they were before it (for recovery and rollback)."""

    __tablename__ = "publish_staging_backups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    staging_id: Mapped[str] = mapped_column(
        ID, ForeignKey("publish_staging.id", ondelete="CASCADE"), index=True
    )
    table_name: Mapped[str] = mapped_column(String(64))
    row_key: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ApprovalRow(Base):
    """An approval request for a guarded action; decided once with a single-use token."""

    __tablename__ = "approvals"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    program_id: Mapped[str] = mapped_column(ID, index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(ID)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(ID, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OutboxRow(Base):
    """Events written in the same transaction as the change; delivered by the worker."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    program_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "next_attempt_at"),)


class BackupRow(Base):
    """A backup file: where, why, when, its checksum; the baseline is never deleted."""

    __tablename__ = "backups"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    program_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    path: Mapped[str] = mapped_column(String(500))
    reason: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiTokenRow(Base):
    """A long-lived, revocable API token of a user (for agents: MCP), optionally limited
    to some of the user's programs; only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    programs: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """The program ids the token is limited to; None: every program of the user."""
    created_by: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
