"""A real arq worker process for tests: the real ``WorkerSettings``, crons off.

``python -m tests.provisioning.worker_process`` reads its settings from ``ZIXLY_*`` like
``zixly worker`` does (database and Redis URLs given), on the queue named by
``ZIXLY_TEST_QUEUE``. Crons are off so it runs only the jobs the test enqueues (a reconciler
pass would act on other test modules' rows).
"""

from __future__ import annotations

import os

from arq.connections import RedisSettings
from arq.worker import create_worker

from zixly.core.logging import configure_logging
from zixly.core.settings import get_settings
from zixly.workers.settings import WorkerSettings


def main() -> None:
    settings = get_settings()
    assert settings.redis_url and settings.database_url
    configure_logging("INFO", json=True)
    worker = create_worker(
        WorkerSettings,  # type: ignore[arg-type]
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        queue_name=os.environ["ZIXLY_TEST_QUEUE"],
        cron_jobs=[],
        poll_delay=0.2,
        ctx={"settings": settings, "database_url": settings.database_url},
    )
    worker.run()


if __name__ == "__main__":
    main()
