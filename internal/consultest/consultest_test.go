package consultest_test

import (
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/slm-mesh/slm-mesh/internal/consultest"
)

// TestStopAndRestart proves an agent comes up with a leader, that Stop makes
// it unreachable, and that Restart brings it back on the same address with
// a fresh (in-memory) state, reachable through the same client.
func TestStopAndRestart(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	client := agent.Client()
	addr := agent.HTTPAddr()

	if leader, err := client.Status().Leader(); err != nil || leader == "" {
		t.Fatalf("leader = %q, %v", leader, err)
	}
	if _, err := client.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil); err != nil {
		t.Fatal(err)
	}

	agent.Stop()
	if _, err := client.Status().Leader(); err == nil {
		t.Fatal("agent still answers after Stop")
	}
	agent.Stop() // stopping twice is harmless

	agent.Restart()
	if got := agent.HTTPAddr(); got != addr {
		t.Errorf("address after Restart = %s, want %s", got, addr)
	}
	if leader, err := client.Status().Leader(); err != nil || leader == "" {
		t.Fatalf("after Restart: leader = %q, %v", leader, err)
	}
	if kv, _, err := client.KV().Get("k", nil); err != nil || kv != nil {
		t.Errorf("after Restart: k = %v, %v; want a fresh agent without it", kv, err)
	}
}

// TestAgentsAreIndependent proves two agents in one process get ports of
// their own and do not see each other's data.
func TestAgentsAreIndependent(t *testing.T) {
	t.Parallel()
	a, b := consultest.Start(t), consultest.Start(t)
	if a.HTTPAddr() == b.HTTPAddr() {
		t.Fatalf("both agents on %s", a.HTTPAddr())
	}
	if _, err := a.Client().KV().Put(&api.KVPair{Key: "only-a", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	if kv, _, err := b.Client().KV().Get("only-a", nil); err != nil || kv != nil {
		t.Errorf("agent b sees a's key: %v, %v", kv, err)
	}
}
