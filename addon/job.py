"""A background worker for slow, Blender-free work: a thread with a progress fraction and a
cancel flag. Whoever started it polls ``done`` from the main thread (a modal operator's timer)
and only then touches Blender data with ``result``.
"""
from __future__ import annotations

import threading
import traceback


class BackgroundJob:
    """Runs ``work(progress, cancel)`` in a daemon thread.

    progress: fraction 0..1 (the last value ``work`` reported); cancel(): ask it to stop;
    done: finished (result, error or cancelled); result / error: what it returned / raised."""

    def __init__(self, work, name: str = "speechface"):
        self.progress = 0.0
        self.result = None
        self.error: BaseException | None = None
        self.trace = ""
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)

    def start(self) -> "BackgroundJob":
        self._thread.start()
        return self

    def _run(self, work) -> None:
        try:
            self.result = work(self._report, self._cancel.is_set)
        except BaseException as ex:  # handed to the main thread, which reports it
            self.error = ex
            self.trace = traceback.format_exc()
        finally:
            self._done.set()

    def _report(self, fraction: float) -> None:
        self.progress = max(0.0, min(1.0, float(fraction)))

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


# the job the panel shows (one bake at a time per Blender session)
current: BackgroundJob | None = None
