//go:build cgo

package main

import "C" // links the binary against libc through cgo

const cgoEnabled = 1
