package discovery

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestNextIndex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		prev, got uint64
		want      uint64
	}{
		{"first answer", 0, 42, 42},
		{"unchanged", 42, 42, 42},
		{"moved on", 42, 50, 50},
		{"went backwards", 42, 7, 0},
		{"zero is never blocked on", 0, 0, 1},
	}
	for _, tt := range tests {
		if got := nextIndex(tt.prev, tt.got); got != tt.want {
			t.Errorf("%s: nextIndex(%d, %d) = %d, want %d", tt.name, tt.prev, tt.got, got, tt.want)
		}
	}
}

func TestInstancesFrom(t *testing.T) {
	t.Parallel()
	entries := []*api.ServiceEntry{
		{Node: &api.Node{Address: "10.0.0.2"}, Service: &api.AgentService{ID: "b", Address: "", Port: 9000}},
		{Node: &api.Node{Address: "10.0.0.1"}, Service: &api.AgentService{ID: "a", Address: "10.0.1.1", Port: 9001}},
		{Node: &api.Node{Address: "10.0.0.3"}, Service: &api.AgentService{ID: "c", Address: "fd00::1", Port: 9002}},
		{Node: &api.Node{Address: ""}, Service: &api.AgentService{ID: "no-address", Port: 9003}},
		{Node: &api.Node{Address: "10.0.0.4"}},
	}
	got := instancesFrom(entries)
	want := []Instance{
		{ID: "a", Addr: "10.0.1.1:9001"}, // the service's own address wins
		{ID: "b", Addr: "10.0.0.2:9000"}, // no service address: the node's
		{ID: "c", Addr: "[fd00::1]:9002"},
	}
	if len(got) != len(want) {
		t.Fatalf("instancesFrom = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("instancesFrom[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestRegistrationValidation(t *testing.T) {
	t.Parallel()
	bad := []Registration{
		{Addr: "127.0.0.1:8080"},                     // no service
		{Service: ServiceCaller, Addr: "127.0.0.1"},  // no port
		{Service: ServiceCaller, Addr: ":8080"},      // no host
		{Service: ServiceCaller, Addr: "0.0.0.0:80"}, // wildcard
		{Service: ServiceCaller, Addr: "[::]:80"},    // wildcard
		{Service: ServiceCaller, Addr: "h:0"},        // port 0
	}
	for _, r := range bad {
		if _, err := r.agentRegistration(); !errors.Is(err, ErrInvalidRegistration) {
			t.Errorf("agentRegistration(%+v) error = %v, want ErrInvalidRegistration", r, err)
		}
	}

	reg, err := Registration{Service: ServiceCaller, Addr: "10.0.0.5:7000", Interval: time.Second}.agentRegistration()
	if err != nil {
		t.Fatal(err)
	}
	if reg.ID != "slm-caller-10.0.0.5-7000" || reg.Address != "10.0.0.5" || reg.Port != 7000 {
		t.Errorf("registration = %+v", reg)
	}
	if reg.Check.HTTP != "http://10.0.0.5:7000/health" || reg.Check.Interval != "1s" || reg.Check.Timeout != "2s" {
		t.Errorf("check = %+v", reg.Check)
	}
	if reg.Check.DeregisterCriticalServiceAfter != "" {
		t.Errorf("DeregisterCriticalServiceAfter = %q, want unset", reg.Check.DeregisterCriticalServiceAfter)
	}
}
