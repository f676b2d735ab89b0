import os

from celery import Celery

app = Celery('proj',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'],
             include=['proj.tasks'])
