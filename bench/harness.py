"""A small load harness every carhub benchmark shares: serve, load, compare.

Why: a benchmark here must compare carhub against a baseline measured in the same
run, under the same gunicorn settings, on a 2-core machine that the load generator and
other engineers share. This module does the mechanics once so each benchmark is only
"what to load and what to compare it with".

Use::

    from bench.harness import GunicornSettings, format_table, serve

    settings = GunicornSettings(workers=2)            # same settings for every server
    with serve("bench.bare_app:create_app()", settings) as bare, \\
         serve("app:create_app()", settings, env={"DATABASE_URL": url}) as api:
        results = [
            bare.load("/car", label="bare", duration=10),
            api.load(f"/api/v1/cars/{car_id}", headers={"Authorization": f"Bearer {token}"},
                     label="cars cached", duration=10),
        ]
    print(format_table(results, baseline="bare"))

* ``serve(app_spec, settings, env=..., ready_path=...)`` starts
  ``python -m gunicorn -c gunicorn.conf.py --bind 127.0.0.1:<free port> <app_spec>``
  (the repository's gunicorn.conf.py, so hooks and defaults are carhub's), waits until
  ``ready_path`` answers any HTTP status, yields a :class:`Server` and stops it
  (SIGTERM, then SIGKILL) on exit. ``env`` is added to this process's environment; a
  ``None`` value removes a variable. The server's output goes to ``server.log_path``.
  The app spec may pass literals: ``'app:create_app({"CACHE_TYPE": "NullCache"})'``.
* ``Server.load(paths, method=, headers=, body=, duration=, connections=, warmup=)``
  (or :func:`drive` for any URL) warms up for ``warmup`` seconds, then loads for
  ``duration`` seconds with ``connections`` concurrent connections and returns a
  :class:`LoadResult`: requests/s, p50 and p99 in ms, errors (non-2xx/3xx and socket
  errors), CPU seconds the server's processes and the load generator used during the
  measured window, and the 1-minute load average at the start. Several ``paths`` are
  requested round-robin (e.g. different ids). ``body`` may be ``bytes``/``str`` or any
  JSON-able value (then sent as JSON).
* The load generator is ``wrk`` when it is on PATH (``apt-get install wrk``), else a
  Python generator: one process per core, threads inside, one keep-alive
  ``http.client`` connection per thread. Force one with ``tool="wrk"``/``"python"`` or
  ``BENCH_LOADGEN=python``. Both report the same fields.
* :func:`format_table` prints results with the ratio of each to a baseline.

Being honest about a shared 2-core machine: the load generator competes with the
server for CPU, so compare only results taken in one run with the same generator and
connections, and look at ``server_cpu_ms_per_request`` (CPU the server spent per
request, which the generator does not distort much) beside requests/s.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- servers


@dataclass(frozen=True)
class GunicornSettings:
    """The gunicorn settings a comparison holds equal between its servers."""

    workers: int = 2
    threads: int = 1
    worker_class: str | None = None  # None: gthread if threads > 1 else sync (as gunicorn.conf.py)
    config: Path = ROOT / "gunicorn.conf.py"
    access_log: bool = False  # the access log costs every server the same; off measures the app
    timeout: int = 30

    @property
    def resolved_worker_class(self) -> str:
        return self.worker_class or ("gthread" if self.threads > 1 else "sync")

    def args(self) -> list[str]:
        args = ["--workers", str(self.workers), "--threads", str(self.threads)]
        args += ["--worker-class", self.resolved_worker_class, "--timeout", str(self.timeout)]
        return (["--config", str(self.config)] if self.config else []) + args

    def env(self) -> dict[str, str]:
        return {
            "WEB_CONCURRENCY": str(self.workers),
            "GUNICORN_THREADS": str(self.threads),
            "ACCESS_LOG": "1" if self.access_log else "0",
        }

    def describe(self) -> str:
        return f"gunicorn {self.workers} workers x {self.threads} threads, {self.resolved_worker_class}"


@dataclass
class Server:
    """A running gunicorn on 127.0.0.1; ``load`` drives it, ``cpu_seconds`` meters it."""

    app_spec: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    settings: GunicornSettings

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def pids(self) -> list[int]:
        """The master and its workers (the processes whose CPU is the server's)."""
        return [self.process.pid, *_children(self.process.pid)]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the master and its live workers have used so far."""
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def load(self, paths: str | Sequence[str], **options: Any) -> LoadResult:
        """:func:`drive` against this server, with its CPU accounted."""
        urls = [self.url(path) for path in ([paths] if isinstance(paths, str) else paths)]
        return drive(urls, server=self, **options)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    app_spec: str,
    settings: GunicornSettings | None = None,
    *,
    env: Mapping[str, str | None] | None = None,
    ready_path: str = "/health",
    ready_timeout: float = 60.0,
    cwd: Path = ROOT,
) -> Iterator[Server]:
    """Run ``gunicorn app_spec`` on a free 127.0.0.1 port until the block ends."""
    settings = settings or GunicornSettings()
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **settings.env()}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    log_file = tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "gunicorn", *settings.args(), "--bind", f"127.0.0.1:{port}", app_spec]
    process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    server = Server(app_spec, port, process, Path(log_file.name), settings)
    try:
        _wait_ready(server, ready_path, ready_timeout)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: Server, path: str, timeout: float) -> None:
    """Ready means gunicorn answers HTTP at all (a 503 from /health is still an answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn {server.app_spec} exited early:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url(path), timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn {server.app_spec} not ready after {timeout:.0f}s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(child) for child in text.split()]
    except OSError:
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces): state, ppid, ..."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float:
    try:
        fields_ = _stat_fields(pid)
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    return (int(fields_[11]) + int(fields_[12])) / CLOCK_TICKS


def cpu_seconds_by_command(commands: Sequence[str]) -> dict[str, float]:
    """CPU seconds so far of every process whose command name is one of ``commands``
    (e.g. ``postgres``, ``beam.smp``), summed per name: services carhub only talks to."""
    totals = dict.fromkeys(commands, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name in totals:
            totals[name] += process_cpu_seconds(int(entry.name))
    return totals


# ---------------------------------------------------------------- load


@dataclass
class LoadResult:
    """One measured load phase. Latencies in milliseconds, CPU in seconds."""

    label: str
    tool: str
    connections: int
    duration_s: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu_s: float | None = None
    loadgen_cpu_s: float | None = None
    loadavg_1m: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def server_cpu_ms_per_request(self) -> float | None:
        if self.server_cpu_s is None or not self.requests:
            return None
        return 1000 * self.server_cpu_s / self.requests

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "tool": self.tool,
            "connections": self.connections,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "server_cpu_s": self.server_cpu_s,
            "loadgen_cpu_s": self.loadgen_cpu_s,
            "server_cpu_ms_per_request": self.server_cpu_ms_per_request,
            "loadavg_1m": self.loadavg_1m,
        }


def available_tool() -> str:
    """``wrk`` if installed (and not overridden by ``BENCH_LOADGEN``), else ``python``."""
    wanted = os.environ.get("BENCH_LOADGEN", "auto")
    if wanted in ("wrk", "python"):
        return wanted
    return "wrk" if shutil.which("wrk") else "python"


def drive(
    urls: str | Sequence[str],
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    duration: float = 10.0,
    connections: int = 4,
    warmup: float = 2.0,
    tool: str | None = None,
    label: str = "",
    server: Server | None = None,
) -> LoadResult:
    """Warm up, then load ``urls`` (round-robin) for ``duration`` seconds; bounded by time."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ValueError("no URL to load")
    for url in urls:
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"benchmarks load 127.0.0.1 only, not {url}")
    headers = dict(headers or {})
    payload = _encode_body(body, headers)
    tool = tool or available_tool()
    run = _run_wrk if tool == "wrk" else _run_python
    if warmup > 0:
        run(urls, method, headers, payload, warmup, connections)
    loadavg = os.getloadavg()[0]
    server_before = server.cpu_seconds() if server else None
    result = run(urls, method, headers, payload, duration, connections)
    if server is not None and server_before is not None:
        result.server_cpu_s = round(server.cpu_seconds() - server_before, 3)
    result.label = label or urls[0]
    result.loadavg_1m = loadavg
    return result


def _encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    headers.setdefault("Content-Type", "application/json")
    return json.dumps(body).encode()


# wrk: a Lua script sets method, headers and body, rotates paths, and prints the result
# in one machine-readable line (latencies in microseconds).
_WRK_SCRIPT = """
local paths = {%(paths)s}
wrk.method = %(method)s
%(body)s
%(headers)s
if #paths > 1 then
  local i = 0
  request = function()
    i = i %% #paths + 1
    return wrk.format(nil, paths[i])
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(value: str) -> str:
    level = "=" * 3
    while f"]{level}]" in value:
        level += "="
    return f"[{level}[{value}]{level}]"


def _run_wrk(
    urls: list[str], method: str, headers: dict[str, str], body: bytes | None, duration: float, connections: int
) -> LoadResult:
    first = urlsplit(urls[0])
    paths = [(parts.path or "/") + (f"?{parts.query}" if parts.query else "") for parts in map(urlsplit, urls)]
    script = _WRK_SCRIPT % {
        "paths": ", ".join(_lua_string(path) for path in paths),
        "method": _lua_string(method),
        "body": f"wrk.body = {_lua_string(body.decode())}" if body is not None else "",
        "headers": "\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    seconds = max(1, math.ceil(duration))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", handle.name]
    command.append(f"{first.scheme}://{first.netloc}{paths[0]}")
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        output = process.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        os.unlink(handle.name)
    line = next((line for line in output.splitlines() if line.startswith("BENCH_RESULT ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    requests, duration_us, errors, p50_us, p99_us = (int(part) for part in line.split()[1:])
    return LoadResult(
        label="",
        tool="wrk",
        connections=connections,
        duration_s=duration_us / 1e6,
        requests=requests,
        errors=errors,
        p50_ms=p50_us / 1000,
        p99_ms=p99_us / 1000,
        loadgen_cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
    )


def _run_python(
    urls: list[str], method: str, headers: dict[str, str], body: bytes | None, duration: float, connections: int
) -> LoadResult:
    """Processes (one per core, at most one per connection) of threads of keep-alive clients."""
    processes = max(1, min(connections, os.cpu_count() or 1))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    before = _children_cpu_seconds()
    started = time.perf_counter()
    pool = context.Pool(processes)
    try:
        parts = pool.starmap(_python_worker, [(urls, method, headers, body, duration, share) for share in shares])
        pool.close()
    finally:
        pool.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(latency for part in parts for latency in part[2])
    busy = max((part[3] for part in parts), default=elapsed)
    return LoadResult(
        label="",
        tool="python",
        connections=connections,
        duration_s=min(elapsed, busy),
        requests=sum(part[0] for part in parts),
        errors=sum(part[1] for part in parts),
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        loadgen_cpu_s=round(_children_cpu_seconds() - before, 3),
    )


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _python_worker(
    urls: list[str], method: str, headers: dict[str, str], body: bytes | None, duration: float, threads: int
) -> tuple[int, int, list[float], float]:
    """Run ``threads`` clients until the deadline: (requests, errors, latencies ms, busy s)."""
    import threading

    started = time.perf_counter()
    deadline = started + duration
    results: list[tuple[int, int, list[float]]] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        parts = urlsplit(urls[0])
        conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=5)
        targets = [(p.path or "/") + (f"?{p.query}" if p.query else "") for p in map(urlsplit, urls)]
        count = errors = 0
        latencies: list[float] = []
        i = offset
        while time.perf_counter() < deadline:
            target = targets[i % len(targets)]
            i += 1
            begin = time.perf_counter()
            try:
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 400
            except (OSError, HTTPException):  # socket or protocol error: count it, reconnect
                conn.close()
                ok = False
            latencies.append((time.perf_counter() - begin) * 1000)
            count += 1
            errors += 0 if ok else 1
        conn.close()
        with lock:
            results.append((count, errors, latencies))

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    busy = time.perf_counter() - started
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        [latency for r in results for latency in r[2]],
        busy,
    )


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# ---------------------------------------------------------------- report


def format_table(results: Sequence[LoadResult], baseline: str) -> str:
    """A plain table: each result's req/s, p50, p99 and req/s ratio to ``baseline``'s.

    With several rounds, each result is compared with the latest ``baseline`` result
    before it (the one of its own round); results before any use the first one.
    """
    base = next((result for result in results if result.label == baseline), None)
    header = (
        f"{'target':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'x ' + baseline:>10} {'srv cpu ms/req':>14} {'loadgen cpu':>11} {'load1':>6}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        if result.label == baseline:
            base = result
        ratio = f"{result.rps / base.rps:.2f}" if base and base.rps else "-"
        cpu = result.server_cpu_ms_per_request
        loadgen = f"{result.loadgen_cpu_s / result.duration_s:.0%}" if result.loadgen_cpu_s is not None else "-"
        lines.append(
            f"{result.label:<22} {result.rps:>9.1f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} "
            f"{result.errors:>7} {ratio:>10} {(f'{cpu:.2f}' if cpu is not None else '-'):>14} "
            f"{loadgen:>11} {result.loadavg_1m:>6.2f}"
        )
    return "\n".join(lines)


def ratio(result: LoadResult, baseline: LoadResult) -> float:
    """requests/s of ``result`` over ``baseline``'s (0 when the baseline served nothing)."""
    return result.rps / baseline.rps if baseline.rps else 0.0
