from .celery import app


@app.task(bind=True)
def to_a(self):
    return self.request.delivery_info.get('routing_key')


@app.task(bind=True)
def by_glob(self):
    return self.request.delivery_info.get('routing_key')


@app.task(bind=True)
def urgent(self):
    return self.request.delivery_info.get('routing_key')
