// A target for `timeskew run` (tests/run.rs), built with CGO_ENABLED=0: a static Go binary that
// reads the clock through the vDSO itself, then runs CMD ARGS with os/exec (the Go runtime's
// clone(CLONE_VFORK|CLONE_VM) + exec) and prints its output.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"time"
)

func main() {
	fmt.Printf("go realtime=%d\n", time.Now().Unix())
	if len(os.Args) > 1 {
		out, err := exec.Command(os.Args[1], os.Args[2:]...).Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		fmt.Printf("%s", out)
	}
}
