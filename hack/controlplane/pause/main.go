// Command pause is the sandbox process of the local node's pods, as registry.k8s.io/pause is:
// it holds the pod's namespaces, reaps orphaned children (it is PID 1 of the sandbox) and exits
// on SIGINT or SIGTERM. It is built statically and is the only file of its image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run())
}

func run() int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return 0
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
	return 0
}
