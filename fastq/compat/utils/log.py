"""``celery.utils.log``: ``get_task_logger`` and ``get_logger``.

A task logger is a standard-library logger under ``celery.task``, as in Celery; fastq's worker
renders its lines with the running task's id, name, queue and attempt (docs/logging.md).
"""
from __future__ import annotations

import logging

TASK_LOGGER = "celery.task"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if logger.parent is logging.root:
        logger.parent = logging.getLogger(TASK_LOGGER)
    return logger


__all__ = ["TASK_LOGGER", "get_logger", "get_task_logger"]
