"""Celery's ``celery.utils`` names that projects import (``celery.utils.log``)."""
