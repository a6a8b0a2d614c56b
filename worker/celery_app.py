"""Entry point for `celery -A worker.celery_app worker -Q gpu,ingest`."""

from hilum.queue import make_celery
from hilum.settings import get_settings

app = make_celery(get_settings())
app.conf.include = ["worker.tasks"]
