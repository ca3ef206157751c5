#!/bin/bash
# The scope of an injection, with bash (5.x) as the target. Protocol as examples/probe.rs:
# prints `ready pid=<pid>`, then per stdin line
#   now  -> now builtin=<us> forked=<us> exec=<us>
#   quit -> exits 0
# builtin: $EPOCHREALTIME read by this shell (gettimeofday, through the vDSO);
# forked:  $EPOCHREALTIME read by a subshell forked for $(...) (it inherits the patched vDSO);
# exec:    `date` run by a forked child that execs it (a fresh, unpatched vDSO).
echo "ready pid=$$"
while read -r cmd; do
    case "$cmd" in
        now)
            builtin=${EPOCHREALTIME/./}
            forked=$(echo "${EPOCHREALTIME/./}")
            exec_=$(date +%s%6N)
            echo "now builtin=$builtin forked=$forked exec=$exec_"
            ;;
        quit) exit 0 ;;
        *) echo "error unknown command \"$cmd\"" ;;
    esac
done
