"""Typed tasks (fastq/validation.py): arguments checked when sent and converted when run, with
pydantic; Celery 5.5's ``pydantic=True`` (conversion in the worker). Real Redis, a worker thread."""
from __future__ import annotations

import os
import uuid

import pytest
from pydantic import BaseModel

from fastq import App
from fastq.compat import Celery
from fastq.testing import worker_thread
from fastq.validation import ArgumentError


class Order(BaseModel):
    sku: str
    quantity: int


class Receipt(BaseModel):
    sku: str
    total: float


def _app(cls=App, **settings):
    return cls(f"typed-{uuid.uuid4().hex[:6]}", broker=os.environ["FASTQ_BROKER_URL"],
               default_queue=f"typed-{uuid.uuid4().hex[:6]}", **settings)


def test_a_bad_argument_fails_when_sent_and_a_good_one_arrives_converted(r):
    app = _app()
    seen = []

    @app.task(typed=True)
    def place(order: Order, price: float, note: str = "") -> Receipt:
        seen.append((type(order).__name__, type(price).__name__))
        return Receipt(sku=order.sku, total=order.quantity * price)

    with pytest.raises(ArgumentError, match=r"place: arguments do not fit .*order: quantity"):
        place.delay({"sku": "a", "quantity": "many"}, 2.0)
    with pytest.raises(ArgumentError, match="missing a required argument"):
        place.delay()
    assert sum(st.depth for st in app.broker.stats(app.conf.default_queue)) == 0  # nothing sent

    with worker_thread(app):
        by_dict = place.delay({"sku": "a", "quantity": "3"}, "2.5")  # converted when sent
        by_model = place.delay(Order(sku="b", quantity=2), 1)
        assert by_dict.get(timeout=10) == {"sku": "a", "total": 7.5}  # the model, dumped
        assert by_model.get(timeout=10) == {"sku": "b", "total": 2.0}
    assert seen == [("Order", "float"), ("Order", "float")]
    app.close()


def test_celery_pydantic_true_converts_in_the_worker_only(r):
    app = _app(Celery)

    @app.task(pydantic=True)
    def ship(order: Order) -> Receipt:
        return Receipt(sku=order.sku, total=float(order.quantity))

    with worker_thread(app):
        ok = ship.delay({"sku": "c", "quantity": 4})
        bad = ship.delay({"sku": "c"})  # sent: Celery checks in the worker
        assert ok.get(timeout=10) == {"sku": "c", "total": 4.0}
        with pytest.raises(ArgumentError, match="quantity"):
            bad.get(timeout=10)
    app.close()
