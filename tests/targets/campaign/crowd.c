// The ordinary campaign target: -t N worker threads (default 6) each checking its clocks and
// registers in a loop (clockcheck.h), the main thread blocked in read(2) on stdin serving
// ping/stats. -s US: each worker sleeps US µs (a raw nanosleep, registers checked) per round,
// leaving CPU time to timeskew on a small machine. usage: crowd [-t N] [-s US] [-o NS]... [-m NS]...
#include "clockcheck.h"

static int nthreads = 6;
static void opt(int o, const char *a) {
    if (o == 't') nthreads = atoi(a);
    if (o == 's') worker_sleep_us = atol(a);
}

int main(int argc, char **argv) {
    parse_offsets(argc, argv, "t:s:", opt);
    crash_handlers(1);
    if (start_workers(nthreads, worker) != 0) return 1;
    say_ready();
    serve();
}
