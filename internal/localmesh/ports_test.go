package localmesh

import "testing"

// TestFreePorts: the gateway's, the caller's and three consecutive
// inference ports, all distinct and all free to listen on.
func TestFreePorts(t *testing.T) {
	t.Parallel()
	gateway, caller, inference, err := FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	ports := []int{gateway, caller, inference, inference + 1, inference + 2}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p <= 0 {
			t.Fatalf("ports %v: not distinct", ports)
		}
		seen[p] = true
	}
	if !allFree(ports) {
		t.Errorf("ports %v: one is taken", ports)
	}
}
