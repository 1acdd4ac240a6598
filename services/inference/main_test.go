package main

import "testing"

// TestDefaultThreads: the default leaves one CPU free, and never asks for
// no thread at all.
func TestDefaultThreads(t *testing.T) {
	t.Parallel()
	for cpus, want := range map[int]int{1: 1, 2: 1, 3: 2, 8: 7, 64: 63} {
		if got := defaultThreads(cpus); got != want {
			t.Errorf("defaultThreads(%d) = %d, want %d", cpus, got, want)
		}
	}
}
