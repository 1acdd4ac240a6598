package localmesh

import "testing"

// TestFreePorts: the gateway's, the caller's and three consecutive
// inference ports, all distinct and all free to listen on. Other test
// binaries run alongside and take ephemeral ports of their own, so a port
// may be taken between FreePorts and the check; a FreePorts that hands out
// taken ports fails every attempt, a race almost never twice.
func TestFreePorts(t *testing.T) {
	t.Parallel()
	const attempts = 3
	var ports []int
	for range attempts {
		gateway, caller, inference, err := FreePorts(3)
		if err != nil {
			t.Fatal(err)
		}
		ports = []int{gateway, caller, inference, inference + 1, inference + 2}
		seen := map[int]bool{}
		for _, p := range ports {
			if seen[p] || p <= 0 {
				t.Fatalf("ports %v: not distinct", ports)
			}
			seen[p] = true
		}
		if allFree(ports) {
			return
		}
	}
	t.Errorf("ports %v: one is taken (in each of %d attempts)", ports, attempts)
}
