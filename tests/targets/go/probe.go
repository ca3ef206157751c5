// A Go test target, built twice: with cgo (CGO_ENABLED=1, dynamically linked against glibc)
// and without (CGO_ENABLED=0, a static binary). Either way the Go runtime reads the clocks by
// calling the vDSO itself, never through libc: the case LD_PRELOAD tools cannot reach.
//
// Protocol (as examples/probe.rs): prints `ready pid=<pid>`, then per stdin line
//
//	now  -> now realtime=<ns> monotonic=<ns> since=<ns> ticks=<n> cgo=<0|1>
//	quit -> exits 0
//
// realtime is time.Now().UnixNano(); monotonic is runtime.nanotime() (CLOCK_MONOTONIC, as the
// runtime's timers and scheduler see it); since is time.Since(start), the monotonic reading
// carried inside time.Time; ticks counts the ticks of a 10 ms time.Ticker, to show whether the
// runtime's timers keep working under the skew. A ticker, not a time.Sleep loop: a ticker's
// next deadline is its last one plus the period, so after a step back it is always armed on the
// old clock and waits the step out, while a loop that happens to re-arm its sleep just after
// the step (its goroutine woken but not yet run) legitimately runs on.
package main

import (
	"bufio"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname
)

//go:linkname nanotime runtime.nanotime
func nanotime() int64

func main() {
	start := time.Now()
	var ticks int64
	ticker := time.NewTicker(10 * time.Millisecond)
	go func() {
		for range ticker.C {
			atomic.AddInt64(&ticks, 1)
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "ready pid=%d\n", os.Getpid())
	out.Flush()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "now":
			rt := time.Now().UnixNano()
			mono := nanotime()
			since := time.Since(start).Nanoseconds()
			fmt.Fprintf(out, "now realtime=%d monotonic=%d since=%d ticks=%d cgo=%d\n",
				rt, mono, since, atomic.LoadInt64(&ticks), cgoEnabled)
		case "quit":
			out.Flush()
			return
		default:
			fmt.Fprintf(out, "error unknown command %q\n", in.Text())
		}
		out.Flush()
	}
}
