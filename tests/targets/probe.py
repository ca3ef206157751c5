"""CPython test target. Protocol as examples/probe.rs: prints `ready pid=<pid>`, then per stdin
line `now` -> `now realtime=<ns> monotonic=<ns> time=<ns> ticks=<n>` (time.time_ns(),
time.monotonic_ns(), time.time() as float seconds scaled to ns, and the rounds of a thread doing
time.sleep(0.01), to show whether timed waits keep working under the skew); `quit` -> exits 0."""
import os
import sys
import threading
import time

ticks = 0


def ticker():
    global ticks
    while True:
        time.sleep(0.01)
        ticks += 1


def main():
    threading.Thread(target=ticker, daemon=True).start()
    print(f"ready pid={os.getpid()}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "now":
            rt = time.time_ns()
            mono = time.monotonic_ns()
            flt = int(time.time() * 1e9)
            print(f"now realtime={rt} monotonic={mono} time={flt} ticks={ticks}", flush=True)
        elif cmd == "quit":
            return
        else:
            print(f"error unknown command {cmd!r}", flush=True)


main()
