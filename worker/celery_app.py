"""Entry point for `celery -A worker.celery_app worker -Q gpu,ingest`."""

import worker.observability  # noqa: F401  (signal handlers: logs with job/dataset ids, worker metrics)
from hilum.queue import make_celery
from hilum.settings import get_settings

app = make_celery(get_settings())
app.conf.include = ["worker.tasks"]
