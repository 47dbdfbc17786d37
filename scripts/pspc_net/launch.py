"""`pspc serve` as a child process, for tests, benchmarks and notebooks: started on a free port, its address read
from the line it prints (`pspc serve listening on HOST:PORT`), stopped with SIGTERM (it exits 0 once the requests
it took are answered).

    with PSPCServe("pspc", ["--token-file", "token", "--data", "data"]) as server:
        client = Client(server.address, "token")
"""

from __future__ import annotations

import os
import select
import signal
import subprocess

READY_PREFIX = "pspc serve listening on "
METRICS_PREFIX = "pspc serve metrics on "


class PSPCServe:
    """`BINARY serve --listen HOST:0 ARGS...`; its standard error goes to `log_path` (or is discarded). Raises
    `RuntimeError` (with the log's end) when the server does not print its address within `timeout` seconds."""

    def __init__(
        self,
        binary: str,
        args: list[str],
        log_path: str | None = None,
        host: str = "127.0.0.1",
        timeout: float = 300.0,
    ):
        self.log_path = log_path
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL
        # stdin stays open (and is the pipe --exit-with-parent watches).
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"{host}:0", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith(READY_PREFIX):
            self.proc.kill()
            self.proc.wait()
            tail = ""
            if log_path and os.path.exists(log_path):
                with open(log_path) as f:
                    tail = f.read()[-2000:]
            raise RuntimeError(f"pspc serve did not start (it printed {line!r}):\n{tail}")
        self.address = line[len(READY_PREFIX) :].strip()
        # With --metrics-listen the next line names the metrics endpoint (HOST:PORT of /metrics, /healthz, /readyz).
        self.metrics_address = None
        if "--metrics-listen" in args:
            line = self.proc.stdout.readline()
            if not line.startswith(METRICS_PREFIX):
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"pspc serve did not name its metrics endpoint (it printed {line!r})")
            self.metrics_address = line[len(METRICS_PREFIX) :].strip()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.log is not subprocess.DEVNULL:
                self.log.close()

    def __enter__(self) -> "PSPCServe":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
