"""Process settings for a steady tail latency, applied once the model is loaded and warm.

A process that has imported TensorFlow and Keras holds millions of Python objects. CPython's
full (generation 2) collection walks all of them: measured at 470-640 ms in the reference
server, finding nothing to free, every few thousand requests, and every request in flight
waited for it (the p99.9 at concurrency 32 was the length of one collection). Requests
themselves make almost no reference cycles (their garbage is freed by reference counting).

`settle` therefore:

- collects once and freezes every object alive after the warm-up (``gc.freeze``): the
  loaded model, TensorFlow's and Keras' modules are never scanned again;
- raises the first generation's threshold, so the young objects of a burst of requests are
  scanned a few times a second instead of every 700 allocations, and full collections
  (now over request-era objects only) come rarely;
- shortens the interpreter's thread switch interval: the event loop thread (parsing,
  answering) and the model thread share the GIL, and with the default 5 ms a request
  that arrives while the model thread runs Python code waits up to that long to be read.
"""

from __future__ import annotations

import gc
import sys

from .logs import logger

GC_THRESHOLDS = (50_000, 20, 100)
"""``gc.set_threshold`` after the freeze: allocations before a young collection, then how
many young (and middle) collections before an older one."""

SWITCH_INTERVAL_S = 0.001
"""``sys.setswitchinterval``: how long a thread may hold the GIL while another waits."""


def settle() -> None:
    """Freeze the warm process's objects out of the collector and tune it for serving.

    Process-wide: `run` calls it in each worker after the warm-up; an app embedded in
    another server does only when created with ``create_app(settle_process=True)``.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logger.info(
        "process settled for serving",
        extra={
            "fields": {
                "frozen_objects": gc.get_freeze_count(),
                "gc_thresholds": list(GC_THRESHOLDS),
                "switch_interval_s": SWITCH_INTERVAL_S,
            }
        },
    )
