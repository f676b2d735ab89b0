"""Minimal Django settings for the compat kit's Django project (no database is used)."""
import os

SECRET_KEY = 'compat-kit-not-secret'
DEBUG = False
ALLOWED_HOSTS = []
INSTALLED_APPS = [
    'django.contrib.contenttypes',
    'orders',
]
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': ':memory:',
    }
}
USE_TZ = True
TIME_ZONE = 'UTC'
DEFAULT_AUTO_FIELD = 'django.db.models.BigAutoField'

ORDER_PREFIX = 'ORD'

# Celery configuration: every key is the Celery setting's name, upper-cased, prefixed CELERY_.
CELERY_BROKER_URL = os.environ['COMPAT_BROKER_URL']
CELERY_RESULT_BACKEND = os.environ['COMPAT_BROKER_URL']
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_SERIALIZER = 'json'
CELERY_RESULT_SERIALIZER = 'json'
CELERY_ACCEPT_CONTENT = ['json']
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_RESULT_EXPIRES = 600
