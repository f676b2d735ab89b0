"""``celery.result``: result handles, and Celery's ``ExceptionInfo`` (``einfo`` of the hooks)."""
import traceback
from typing import Any

from fastq.result import AsyncResult, EagerResult
from fastq.workflows.results import DagResult, GroupResult

ResultBase = AsyncResult
ResultSet = GroupResult


class ExceptionInfo:
    """Celery's ``billiard.einfo.ExceptionInfo``: the exception, its type and its traceback."""

    def __init__(self, exc_info: tuple | None = None):
        self.type, self.exception, self.tb = exc_info or (None, None, None)
        self.traceback = "".join(traceback.format_exception(self.exception)) \
            if self.exception is not None else ""

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"

    @property
    def exc_info(self) -> tuple[Any, Any, Any]:
        return (self.type, self.exception, self.tb)


__all__ = ["AsyncResult", "DagResult", "EagerResult", "ExceptionInfo", "GroupResult",
           "ResultBase", "ResultSet"]
