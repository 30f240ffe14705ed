"""CPU-time helpers of the data benchmarks (tools/bench.py, tools/bench_torch_loader.py), free of
MindSpore and torch: a busy pure-Python thread to disturb a pipeline, and the CPU seconds of a
process with its worker processes."""
import os
import resource
import threading
import time


def busy_python(stop: threading.Event, cpu: list) -> None:
    """The disturbance: pure-Python work that wants the interpreter lock all the time (a logger, a
    callback, an evaluation loop); its own CPU seconds go to `cpu` when `stop` is set."""
    count = 0
    while not stop.is_set():
        count += 1
    cpu.append(time.thread_time())


def cpu_seconds(pids=()) -> float:
    """CPU seconds so far of this process (every thread) and of the processes `pids` (/proc: user +
    system; RUSAGE_CHILDREN would count only children that have ended)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return usage.ru_utime + usage.ru_stime + ticks / os.sysconf("SC_CLK_TCK")


def timed_beside_busy_thread(call, busy: bool, pids=()) -> tuple:
    """(seconds, CPU seconds of this process and `pids`, result) of `call()`, with a busy Python thread
    running beside it if `busy` (its own CPU time left out)."""
    stop, busy_cpu = threading.Event(), []
    thread = threading.Thread(target=busy_python, args=(stop, busy_cpu), daemon=True) if busy else None
    if thread:
        thread.start()
    start, cpu = time.perf_counter(), cpu_seconds(pids)
    result = call()
    seconds, cpu = time.perf_counter() - start, cpu_seconds(pids) - cpu
    if thread:
        stop.set()
        thread.join()
        cpu -= busy_cpu[0]
    return seconds, cpu, result
