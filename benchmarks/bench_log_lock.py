"""What keeping log lines whole across processes costs: the lock shared by the processes
of a pre-fork server (``backend_kit.gunicorn``), side by side with the unlocked write.

    python benchmarks/bench_log_lock.py [--calls 20000] [--repeat 5] [--json PATH]

Part one, one process: a backend_kit ``info`` call writing a short line (about 250
bytes) and a long one (64 KB) to ``/dev/null`` (a real ``write`` per line, as to a
pipe), with and without the shared lock. Part two, four forked processes writing 64 KB
lines to one pipe that this process reads: how many lines arrive broken, and how many
lines per second get through, without and with the lock. Targets:

* the lock (two ``fcntl`` calls per line, about 1 µs each) adds at most 50 % to a short
  line's log call, itself a few microseconds, and at most 20 % to a 64 KB one (whose
  write dominates, and varies). Every line takes it, short ones too: a short line
  written unlocked could land in the middle of a long line another process is writing
  in several pieces;
* with the lock, no line of the four processes arrives broken.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import orjson
from _report import Results, add_json_option

from backend_kit import configure_logging, get_logger, load_settings
from backend_kit._logging import use_process_lock

SHORT = "x" * 100
LONG = "x" * 65536
WRITERS = 4


def _configure(stream: io.TextIOBase) -> None:
    configure_logging(
        load_settings(service_name="bench", environment="production"),
        level="INFO",
        format="json",
        stream=stream,  # type: ignore[arg-type]
    )


def _per_call(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls


def one_process(calls: int, repeat: int, lock_fd: int) -> dict[str, float]:
    """Microseconds per log call, best of *repeat* interleaved rounds."""
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    _configure(devnull)
    log = get_logger("bench").bind(user_id=1234, order_id="ord_8f3a2c")
    contenders: dict[str, tuple[Callable[[], object], bool, int]] = {
        "short line, unlocked": (lambda: log.info("order_created", note=SHORT), False, calls),
        "short line, locked": (lambda: log.info("order_created", note=SHORT), True, calls),
        "64 KB line, unlocked": (lambda: log.info("export", payload=LONG), False, calls // 20),
        "64 KB line, locked": (lambda: log.info("export", payload=LONG), True, calls // 20),
    }
    best = dict.fromkeys(contenders, float("inf"))
    try:
        for _ in range(repeat):
            for name, (call, locked, count) in contenders.items():
                use_process_lock(lock_fd if locked else None)
                call()  # warm
                best[name] = min(best[name], _per_call(call, count))
    finally:
        use_process_lock(None)
        devnull.close()
    return {name: seconds * 1e6 for name, seconds in best.items()}


def _writer(write_fd: int, lines: int, lock_fd: int | None, number: int) -> None:
    stream = io.TextIOWrapper(io.FileIO(write_fd, "w", closefd=False), encoding="utf-8")
    _configure(stream)
    use_process_lock(lock_fd)
    log = get_logger("bench")
    for index in range(lines):
        log.info("export", writer=number, index=index, payload=LONG)


def many_processes(lines: int, lock_fd: int | None) -> tuple[int, int, float]:
    """(lines received whole, lines broken, seconds) for WRITERS processes on one pipe."""
    read_fd, write_fd = os.pipe()
    received: list[bytes] = []
    reader_file = os.fdopen(read_fd, "rb")
    reader = threading.Thread(target=lambda: received.extend(reader_file), daemon=True)
    reader.start()
    started = time.perf_counter()
    children = []
    for number in range(WRITERS):
        pid = os.fork()
        if pid == 0:  # the child writes, then leaves without running the parent's cleanup
            code = 1
            try:
                _writer(write_fd, lines, lock_fd, number)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    os.close(write_fd)
    for pid in children:
        os.waitpid(pid, 0)
    reader.join(timeout=60)
    elapsed = time.perf_counter() - started
    reader_file.close()
    whole = broken = 0
    for line in received:
        try:
            orjson.loads(line)
            whole += 1
        except orjson.JSONDecodeError:
            broken += 1
    return whole, broken, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lines", type=int, default=500, help="64 KB lines per process")
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("bench_log_lock")
    missed = False

    with tempfile.TemporaryFile() as lock_file:
        lock_fd = lock_file.fileno()
        micro = one_process(args.calls, args.repeat, lock_fd)
        print(f"one process, best of {args.repeat} rounds, microseconds per log call:")
        for name, value in micro.items():
            print(f"  {value:9.3f}  {name}")
            results.absolute(name, value, "µs/call", better="lower")
        print("\nratios locked / unlocked (target):")
        for size, target in (("short line", 1.5), ("64 KB line", 1.2)):
            ratio = micro[f"{size}, locked"] / micro[f"{size}, unlocked"]
            added = micro[f"{size}, locked"] - micro[f"{size}, unlocked"]
            verdict = "ok" if ratio <= target else "MISSED"
            missed |= ratio > target
            print(f"  {ratio:6.3f}  (<= {target:.2f})  {verdict}  {size} (+{added:.2f} µs)")
            results.ratio(f"{size}: locked / unlocked", ratio, target=target, better="lower")

        print(f"\n{WRITERS} processes x {args.lines} lines of 64 KB on one pipe:")
        for label, fd in (("unlocked", None), ("locked", lock_fd)):
            whole, broken, seconds = many_processes(args.lines, fd)
            rate = (whole + broken) / seconds
            print(f"  {label:9s} whole {whole:6d}  broken {broken:6d}  {rate:9.0f} lines/s")
            results.absolute(f"{label}: broken lines", broken, "lines", better="lower",
                             target=0 if fd is not None else None)  # fmt: skip
            results.absolute(f"{label}: throughput", rate, "lines/s", better="higher")
            if fd is not None and broken:
                missed = True
    results.write(args.json)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
