from .celery import app


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def identity(value):
    return value
