package prom

import "testing"

func TestRegistryHasRuntimeAndProcessMetrics(t *testing.T) {
	families, err := NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
	}
	for _, name := range []string{"go_goroutines", "process_open_fds", "process_resident_memory_bytes"} {
		if !have[name] {
			t.Errorf("no %s among %d metric families", name, len(families))
		}
	}
}
