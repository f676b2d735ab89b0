from .celery import app


@app.task(bind=True)
def unrouted(self):
    return self.request.delivery_info.get('routing_key')


@app.task(bind=True, queue='b')
def task_option_queue(self):
    return self.request.delivery_info.get('routing_key')
