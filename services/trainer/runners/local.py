"""The local runner: each job is a child process (`python -m services.trainer.worker`), queued in SQL.

A dispatcher thread starts queued local jobs, at most `max_concurrent` at once, oldest first.
Cancel sets the job's cancel flag and sends SIGTERM; the worker stops between epochs. A worker
that dies without recording an outcome is marked failed with its exit status.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from services.trainer.errors import JobLogUnavailable
from services.trainer.jobs import FAILED, QUEUED, Job, JobStore
from services.trainer.logs import JobLog, LogRequest, bounded, file_chunks

# A job id names its log file: only ids that cannot leave the log folder.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

log = logging.getLogger(__name__)


class LocalRunner:
    name = "local"

    def __init__(
        self,
        store: JobStore,
        env: dict[str, str],
        max_concurrent: int = 1,
        log_dir: Path | None = None,
        log_read_timeout_s: float = 300.0,
    ) -> None:
        self._store = store
        self._log_read_timeout_s = log_read_timeout_s
        self._env = env
        self._max = max_concurrent
        self._log_dir = log_dir
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dispatch, name="local-runner", daemon=True)

    def recover(self) -> None:
        """At start: jobs a previous trainer process left running locally cannot be reattached."""
        for job in self._store.list("running"):
            if job.runner == self.name:
                self._store.update(
                    job.job_id, state=FAILED, phase="failed", reason="the trainer restarted while it ran"
                )

    def begin(self) -> None:
        self._thread.start()

    def start(self, job: Job) -> None:
        self._wake.set()

    def cancel(self, job: Job) -> None:
        with self._lock:
            proc = self._procs.get(job.job_id)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def log_path(self, job_id: str) -> Path | None:
        if self._log_dir is None or not _SAFE_ID.fullmatch(job_id):
            return None
        return self._log_dir / f"{job_id}.log"

    def logs(self, job: Job, req: LogRequest, stop: threading.Event) -> JobLog:
        """The worker's stdout and stderr, as it wrote them to its log file."""
        path = self.log_path(job.job_id)
        if path is None:
            raise JobLogUnavailable(f"job {job.job_id} ran on the local runner, which keeps no log for it here")
        if not path.is_file():
            why = "it is queued and has not started" if job.state == QUEUED else f"its log {path} is not there"
            raise JobLogUnavailable(f"job {job.job_id} has no log yet: {why}")
        log = JobLog(source=f"file {path}")

        def done() -> bool:
            return self._store.get(job.job_id).done

        chunks = file_chunks(path, req, done=done, stop=stop, read_timeout_s=self._log_read_timeout_s)
        log.chunks = bounded(log, chunks, req.max_bytes)
        return log

    def running(self) -> int:
        with self._lock:
            return sum(1 for p in self._procs.values() if p.poll() is None)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._reap()
            free = self._max - self.running()
            if free <= 0:
                continue
            for job in [j for j in self._store.list(QUEUED) if j.runner == self.name][:free]:
                self._launch(job)

    def _launch(self, job: Job) -> None:
        out = subprocess.DEVNULL
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            path = self.log_path(job.job_id)
            out = open(path, "ab") if path is not None else subprocess.DEVNULL
        if not self._store.claim(job.job_id, "pending"):
            return
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.trainer.worker", "--job-id", job.job_id],
            env=self._env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._store.update(job.job_id, external_id=f"pid:{proc.pid}")
        with self._lock:
            self._procs[job.job_id] = proc
        threading.Thread(target=self._wait, args=(job.job_id, proc), daemon=True).start()
        log.info("job started", extra={"job_id": job.job_id, "pid": proc.pid})

    def _wait(self, job_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        if self._store.update(job_id, state=FAILED, phase="failed", reason=f"worker exited with status {code}"):
            log.warning("worker exited without an outcome", extra={"job_id": job_id, "code": code})
        self._wake.set()

    def _reap(self) -> None:
        with self._lock:
            for job_id in [j for j, p in self._procs.items() if p.poll() is not None]:
                del self._procs[job_id]

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop dispatching; cancel running workers and wait for them (they record 'cancelled')."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            procs = dict(self._procs)
        for job_id, proc in procs.items():
            if proc.poll() is None:
                self._store.update(job_id, cancel_requested=True)
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self._thread.is_alive():
            self._thread.join(5)
