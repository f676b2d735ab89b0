"""Bearer tokens of the web API (settings ``web_token``, ``web_open_writes``, ``web_read_token``).

Writes need ``web_token``; with none configured they are refused unless ``web_open_writes`` says
that something in front of the server authenticates. Reads are open unless ``web_read_token`` is
set; then either token reads.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fastq.config import Settings

bearer = HTTPBearer(auto_error=False, description="the web_token (writes) or web_read_token")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _matches(given: str, *tokens: str | None) -> bool:
    return any(t is not None and hmac.compare_digest(given.encode(), t.encode()) for t in tokens)


def _check(creds: HTTPAuthorizationCredentials | None, *tokens: str | None) -> None:
    if creds is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token "
                            "(Authorization: Bearer <token>)", {"WWW-Authenticate": "Bearer"})
    if not _matches(creds.credentials, *tokens):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong bearer token")


def write_guard(conf: Settings) -> Callable[..., None]:
    """A dependency refusing writes the settings do not allow."""

    def guard(creds: Credentials) -> None:
        if conf.web_token is not None:
            _check(creds, conf.web_token)
        elif not conf.web_open_writes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "writes are disabled: set "
                                "FASTQ_WEB_TOKEN (or FASTQ_WEB_OPEN_WRITES=1 behind your own "
                                "authentication); see docs/web.md")

    return guard


def read_guard(conf: Settings) -> Callable[..., None]:
    """A dependency refusing reads without a token when ``web_read_token`` is set."""

    def guard(creds: Credentials) -> None:
        if conf.web_read_token is not None:
            _check(creds, conf.web_read_token, conf.web_token)

    return guard
