import os
import time

from celery import Celery

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])
app.conf.task_track_started = True


@app.task(bind=True)
def process(self, total):
    for i in range(total):
        self.update_state(state='PROGRESS', meta={'current': i + 1, 'total': total})
        time.sleep(0.3)
    return {'current': total, 'total': total, 'status': 'done'}


@app.task
def slow(seconds):
    time.sleep(seconds)
    return seconds


@app.task(bind=True)
def custom_final_state(self):
    # Leaving a custom state behind: the return value still wins.
    time.sleep(0.5)
    self.update_state(state='HALFWAY', meta={'note': 'stored'})
    time.sleep(0.5)
    return 'overwritten'
