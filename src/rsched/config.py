"""Service settings from the environment (prefix ``RSCHED_``).

Development (the embedded default) needs nothing: a SQLite file, a per-install secret
generated once and kept beside the database, no Redis. Outside development the service
refuses to start with a missing, weak or placeholder secret and without encryption keys.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rsched.domain.errors import FieldError, InvalidInput

PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "admin", "test", "dev", "default"}
MIN_SECRET_BYTES = 32
DEFAULT_BACKUP_MAX_AGE_MINUTES = 120
MAX_BACKUP_MAX_AGE_MINUTES = 525_600
"""A year: far beyond any useful age, and well inside what date arithmetic can carry."""
TRUE_WORDS = frozenset({"1", "true", "yes"})
FALSE_WORDS = frozenset({"", "0", "false", "no"})


def is_weak_secret(value: str) -> bool:
    """A placeholder word or fewer than :data:`MIN_SECRET_BYTES` bytes."""
    return value.strip().lower() in PLACEHOLDERS or len(value.encode()) < MIN_SECRET_BYTES


def weak_secret(variable: str) -> FieldError:
    """The error naming ``variable`` when :func:`is_weak_secret` holds for its value."""
    return FieldError(
        variable, f"weak or placeholder secret: use at least {MIN_SECRET_BYTES} random bytes"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RSCHED_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("rsched-data")
    database_url: str | None = None
    """Default: SQLite file ``{data_dir}/rsched.db`` (WAL)."""
    db_pool_size: int = Field(default=10, ge=1, le=200)
    """Connections each API process keeps open (a busy process beyond it opens up to
    ``db_max_overflow`` more, closed again after use: a new server process each time)."""
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    redis_url: str | None = None
    jwt_secret: str | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_minutes: int = Field(default=15, ge=1, le=120)
    refresh_token_days: int = Field(default=14, ge=1, le=90)
    encryption_keys: str | None = None
    """Comma-separated Fernet keys, newest first."""
    login_attempts_per_window: int = 10
    login_window_seconds: int = 300
    bootstrap_admin_secret: str | None = None
    backup_max_age_minutes: float = Field(
        default=DEFAULT_BACKUP_MAX_AGE_MINUTES,
        gt=0,
        le=MAX_BACKUP_MAX_AGE_MINUTES,
        allow_inf_nan=False,
    )
    """The backup guard reuses a verified backup younger than this (see ``backup_max_age``)."""
    backup_encrypt: bool = False
    """New backups are encrypted unless the caller says otherwise (``1``, ``true``, ``yes``)."""
    webhooks: Annotated[tuple[str, ...], NoDecode] = ()
    """Where the outbox POSTs events: comma-separated URLs, ``slack+https://…`` for Slack."""

    @field_validator("backup_max_age_minutes", mode="wrap")
    @classmethod
    def _minutes(cls, v: object, handler: ValidatorFunctionWrapHandler) -> float:
        if isinstance(v, str) and not v.strip():
            return float(DEFAULT_BACKUP_MAX_AGE_MINUTES)  # an empty variable is an unset one
        try:
            minutes: float = handler(v)
        except ValidationError:
            raise ValueError(
                f"must be a positive number of minutes, at most {MAX_BACKUP_MAX_AGE_MINUTES}"
            ) from None
        return minutes

    @field_validator("backup_encrypt", mode="before")
    @classmethod
    def _flag(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        word = v.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
        # Refused rather than read as false: "on" or "y" never silently means "no".
        raise ValueError("must be 1, true or yes to encrypt; 0, false, no or empty not to")

    @field_validator("webhooks", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(url.strip() for url in v.split(",") if url.strip())
        return v

    @field_validator("webhooks")
    @classmethod
    def _webhook_urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            return v
        # The outbox owns what a webhook URL is; imported here because the services
        # import this module, and only when there is a URL to check.
        from rsched.services.outbox import Webhook

        for url in v:
            try:
                Webhook.parse(url)
            except InvalidInput as exc:  # its message names scheme and host, never the path
                raise ValueError("; ".join(e.message for e in exc.errors)) from None
        return v

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None  # an empty variable is an unset one: the embedded default
        if v is not None and not v.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return v

    @property
    def backup_max_age(self) -> timedelta:
        return timedelta(minutes=self.backup_max_age_minutes)

    @property
    def is_dev(self) -> bool:
        return self.env != "production"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'rsched.db').resolve()}"

    def check_for_service(self) -> None:
        """Refuse to serve with unsafe settings outside development."""
        if self.is_dev:
            return
        errors: list[FieldError] = []
        secret = self.jwt_secret or ""
        if not secret:
            errors.append(FieldError("RSCHED_JWT_SECRET", "required outside development"))
        elif is_weak_secret(secret):
            errors.append(weak_secret("RSCHED_JWT_SECRET"))
        if not self.encryption_keys:
            errors.append(
                FieldError(
                    "RSCHED_ENCRYPTION_KEYS",
                    "required outside development (never an ephemeral key)",
                )
            )
        if not self.database_url or self.database_url.startswith("sqlite"):
            errors.append(FieldError("RSCHED_DATABASE_URL", "production needs PostgreSQL"))
        if errors:
            raise InvalidInput(errors, source="settings")

    def dev_secret(self, name: str) -> str:
        """A per-install development secret kept in ``data_dir`` (never a constant)."""
        path = self.data_dir / f".{name}"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        path.write_text(value)
        path.chmod(0o600)
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; a bad value is ``InvalidInput`` naming the
    variable (``RSCHED_DB_POOL_SIZE: Input should be greater than or equal to 1``)."""
    try:
        return Settings()
    except ValidationError as exc:
        prefix = Settings.model_config.get("env_prefix", "")
        raise InvalidInput(
            [
                FieldError(
                    (prefix + "_".join(str(part) for part in error["loc"])).upper(),
                    error["msg"],
                )
                for error in exc.errors()
            ],
            source="settings",
        ) from None
