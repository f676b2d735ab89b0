import os

broker_url = os.environ['COMPAT_BROKER_URL']
result_backend = os.environ['COMPAT_BROKER_URL']

task_serializer = 'json'
result_serializer = 'json'
accept_content = ['json']
timezone = 'Europe/Oslo'
enable_utc = True
task_annotations = {'tasks.add': {'rate_limit': '100/s'}}
