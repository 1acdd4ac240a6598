// Package prom holds what the three services' Prometheus endpoints share.
package prom

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry with the Go runtime's metrics
// (go_goroutines, go_memstats_*, ...) and the process's (process_open_fds,
// process_resident_memory_bytes, ...), to which a service adds its own. The
// load tool (tools/load) judges goroutine growth from go_goroutines.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}
