"""Sign in, refresh, sign out. Credentials travel in the body; the answer holds a
short-lived access token (``Authorization: Bearer …``) and a rotating refresh token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from rsched.api.deps import SessionDep, SettingsDep
from rsched.api.errors import problem_responses
from rsched.services import auth as svc

router = APIRouter(prefix="/auth", tags=["auth"], responses=problem_responses(401, 422))

Secret = Annotated[str, Field(min_length=1, max_length=1024)]


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, Field(min_length=1, max_length=254)]
    password: Secret


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: Secret


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="lifetime of the access token in seconds")


def _tokens(pair: svc.TokenPair) -> Tokens:
    return Tokens(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
    )


@router.post("/login", responses=problem_responses(429))
def login(body: LoginBody, session: SessionDep, settings: SettingsDep) -> Tokens:
    """Every refusal looks the same (401); too many failures for one email answer 429
    with ``Retry-After``."""
    return _tokens(svc.login(session, settings, email=body.email, password=body.password))


@router.post("/refresh")
def refresh(body: RefreshBody, session: SessionDep, settings: SettingsDep) -> Tokens:
    """Exchange a refresh token for a new pair; the presented one is used up (a reused
    token revokes its whole family)."""
    return _tokens(svc.refresh(session, settings, body.refresh_token))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(body: RefreshBody, session: SessionDep) -> None:
    """Revoke the refresh token's session; unknown tokens are ignored."""
    svc.logout(session, body.refresh_token)
