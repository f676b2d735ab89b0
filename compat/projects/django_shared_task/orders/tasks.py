from django.conf import settings

from celery import shared_task


@shared_task
def place_order(number, items):
    return {'order': f'{settings.ORDER_PREFIX}-{number}', 'items': len(items)}


@shared_task(bind=True)
def order_total(self, prices):
    return {'total': sum(prices), 'task': self.name}


@shared_task(name='orders.cancel')
def cancel(number):
    return f'cancelled {number}'


@shared_task
def reject(number):
    raise ValueError(f'order {number} rejected')
