from celery import Celery

app = Celery('tasks')
app.config_from_object('celeryconfig')


@app.task
def add(x, y):
    return x + y


@app.task(name='reports.render')
def render(title, pages=1):
    return f'{title}: {pages} page(s)'
