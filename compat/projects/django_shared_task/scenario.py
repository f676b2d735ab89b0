"""Django: shared tasks found by autodiscovery, configured from Django settings."""
import os

import django

from compatkit import FIRST_TIMEOUT, TIMEOUT, exc_name, kit

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')
django.setup()

from proj import celery_app  # noqa: E402
from orders.tasks import cancel, order_total, place_order, reject  # noqa: E402


@kit.check
def shared_task_delay():
    return place_order.delay(7, ['apple', 'pear']).get(timeout=FIRST_TIMEOUT)


@kit.check
def bound_shared_task():
    return order_total.delay([1, 2, 3.5]).get(timeout=TIMEOUT)


@kit.check
def explicit_name():
    return {'name': cancel.name, 'value': cancel.delay(7).get(timeout=TIMEOUT)}


@kit.check
def send_task_by_name():
    return celery_app.send_task('orders.tasks.place_order', args=(8, ['fig'])).get(timeout=TIMEOUT)


@kit.check
def failure():
    result = reject.delay(9)
    try:
        result.get(timeout=TIMEOUT)
    except Exception as exc:
        return {'raised': exc_name(exc), 'args': list(exc.args), 'state': result.state}


@kit.check
def settings_namespace():
    conf = celery_app.conf
    return {'timezone': conf.timezone, 'task_serializer': conf.task_serializer,
            'accept_content': list(conf.accept_content), 'task_time_limit': conf.task_time_limit,
            'result_expires': int(conf.result_expires.total_seconds())
            if hasattr(conf.result_expires, 'total_seconds') else conf.result_expires,
            'broker_is_env': conf.broker_url == os.environ['COMPAT_BROKER_URL']}


@kit.check
def shared_task_bound_to_project_app():
    return {'app_main': place_order.app.main, 'same_app': place_order.app is celery_app,
            'autodiscovered': sorted(n for n in celery_app.tasks if n.startswith(('orders', 'proj')))}


kit.emit()
