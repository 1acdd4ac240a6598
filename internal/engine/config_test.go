package engine

import (
	"testing"
	"time"
)

// TestDefaultThreads: the default leaves one CPU free, and never asks for
// no thread at all.
func TestDefaultThreads(t *testing.T) {
	t.Parallel()
	for cpus, want := range map[int]int{1: 1, 2: 1, 3: 2, 8: 7, 64: 63} {
		if got := DefaultThreads(cpus); got != want {
			t.Errorf("DefaultThreads(%d) = %d, want %d", cpus, got, want)
		}
	}
}

// TestConfigDefaults: a zero Config runs with DefaultConfig, but for the
// queue, which follows Parallel; a field set keeps its value.
func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	var c Config
	c.setDefaults()
	d := DefaultConfig()
	if c.Threads != d.Threads || c.Parallel != d.Parallel || c.ContextPerSeq != d.ContextPerSeq || c.BatchSize != d.BatchSize ||
		c.PrefillChunk != d.PrefillChunk || c.MaxQueueWait != d.MaxQueueWait || c.DefaultMaxTokens != d.DefaultMaxTokens ||
		c.FlashAttention != d.FlashAttention || c.KVCacheType != d.KVCacheType || c.QueueSize != 4*d.Parallel || c.Logger == nil {
		t.Errorf("a zero Config became %+v, want DefaultConfig %+v with a queue of 4×Parallel", c, d)
	}
	c = Config{Threads: 3, Parallel: 2, MaxQueueWait: -time.Second, QueueSize: -1, BatchSize: 16}
	c.setDefaults()
	if c.Threads != 3 || c.Parallel != 2 || c.MaxQueueWait != -time.Second || c.QueueSize != 0 || c.PrefillChunk != 16 {
		t.Errorf("set fields became %+v", c)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	for _, c := range []Config{
		{FlashAttention: "yes"},
		{KVCacheType: "q5_0"},
		{KVCacheType: "q8_0", FlashAttention: "off"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: valid, want an error", c)
		}
	}
}
