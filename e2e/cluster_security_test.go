package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slm-mesh/slm-mesh/internal/clusterbox"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// TestClusterSecurity runs the attacks from inside a task (runSecurity)
// on a box that is already up (`go run ./tools/box up -no-deploy` is
// enough): SLM_BOX_DIR names its directory. TestClusterInABox runs them on
// the box it brings up.
func TestClusterSecurity(t *testing.T) {
	box := boxUp(t, "the attacks")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	runSecurity(ctx, t, box)
}

// probeResult is one line of e2e/probe's report.
type probeResult struct {
	Attempt string `json:"attempt"`
	Reached bool   `json:"reached"`
	Detail  string `json:"detail"`
}

// probeAttempts are attempts every probe must report: a report without
// them did not run to its end.
var probeAttempts = []string{"capabilities", "setuid(0)", "setuid programs in the chroot", "read /etc/nomad.d", "instance metadata",
	"control: the task API reads the task's own job's variable"}

// runSecurity plays a compromised task: e2e/probe runs as a batch job on a
// client of each role, with what the production jobs have (the exec
// driver, the default user, the client's chroot), and tries to raise its
// privileges, read the agents' secrets, reach the instance metadata
// service and use the Nomad and Consul APIs. Every attempt must fail. The
// metadata service is clusterbox's stand-in; root on the same host
// reaching it, and nobody outside any task not, show that the guard, not
// the network, is what stops the task.
func runSecurity(ctx context.Context, t *testing.T, box *clusterbox.Box) {
	imds, err := box.StartIMDS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer imds.Close()
	roles := []string{"gateway", "caller", "inference"}
	for _, role := range roles {
		h := box.HostsOf(role)[0]
		if err := box.IMDSFrom(ctx, h, "root"); err != nil {
			t.Fatalf("control: root on %s must reach the metadata service: %v", h.Name, err)
		}
		if err := box.IMDSFrom(ctx, h, "nobody"); err == nil {
			t.Errorf("nobody on %s reaches the metadata service outside any task: slm-imds-guard does not hold", h.Name)
		}
	}

	bin := filepath.Join(t.TempDir(), "probe")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./e2e/probe")
	build.Dir = modeltest.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./e2e/probe: %v\n%s", err, out)
	}
	url, sum, err := box.PutObject(ctx, "probe/probe", bin)
	if err != nil {
		t.Fatal(err)
	}

	mgmt, err := box.Nomad(box.ManagementToken())
	if err != nil {
		t.Fatal(err)
	}
	server := box.HostsOf("server")[0]
	job := probeJob(roles, url, sum, "https://"+server.IP+":4646")
	// The control for the task API: the probe's own job's variable, which
	// its workload identity may read.
	own := &nomadapi.Variable{Path: "nomad/jobs/" + *job.ID, Items: nomadapi.VariableItems{"note": "the probe may read this"}}
	if _, _, err := mgmt.Variables().Create(own, nil); err != nil {
		t.Fatal(err)
	}
	// With the services deployed, the probe must find them to attack
	// their RPC; on a box up with -no-deploy there is nothing to find.
	deployed := true
	for _, id := range []string{"slm-caller", "slm-inference"} {
		if _, _, err := mgmt.Jobs().Info(id, nil); err != nil {
			deployed = false
		}
	}
	if _, _, err := mgmt.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_, _, _ = mgmt.Jobs().Deregister(*job.ID, true, nil)
		_, _ = mgmt.Variables().Delete(own.Path, nil)
	}()

	var allocs []*nomadapi.AllocationListStub
	err = clusterbox.Poll(ctx, 5*time.Minute, func() error {
		allocs, _, err = mgmt.Jobs().Allocations(*job.ID, false, nil)
		if err != nil {
			return err
		}
		done := 0
		for _, a := range allocs {
			if a.ClientStatus == nomadapi.AllocClientStatusComplete || a.ClientStatus == nomadapi.AllocClientStatusFailed {
				done++
			}
		}
		if done < len(roles) {
			return fmt.Errorf("%d of %d probes done", done, len(roles))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, stub := range allocs {
		alloc, _, err := mgmt.Allocations().Info(stub.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if stub.ClientStatus != nomadapi.AllocClientStatusComplete {
			t.Errorf("%s on %s: the probe did not complete (%s): %s", stub.TaskGroup, stub.NodeName, stub.ClientStatus, taskEvents(alloc))
			continue
		}
		results, err := probeReport(mgmt, alloc)
		if err != nil {
			t.Errorf("%s on %s: %v", stub.TaskGroup, stub.NodeName, err)
			continue
		}
		for _, r := range results {
			if control, ok := strings.CutPrefix(r.Attempt, "control: "); ok {
				// A control must work, or the attempts it stands beside
				// prove nothing.
				if !r.Reached && (deployed || !strings.HasSuffix(control, "found in Consul")) {
					t.Errorf("CONTROL %s on %s: %s: %s", stub.TaskGroup, stub.NodeName, control, r.Detail)
				}
				continue
			}
			if r.Reached {
				t.Errorf("ATTACK %s on %s: %s: %s", stub.TaskGroup, stub.NodeName, r.Attempt, r.Detail)
			} else {
				t.Logf("blocked %s on %s: %s: %s", stub.TaskGroup, stub.NodeName, r.Attempt, r.Detail)
			}
		}
	}
}

// probeJob is a batch job with one group per role, each placed on a
// client of that role as the services are, running the probe fetched
// from url as the production jobs run their binaries.
func probeJob(roles []string, url, sha256, serverAPI string) *nomadapi.Job {
	job := nomadapi.NewBatchJob("slm-probe", "slm-probe", "", 50)
	job.Datacenters = []string{"*"}
	for _, role := range roles {
		task := nomadapi.NewTask("probe", "exec")
		task.Config = map[string]any{
			"command": "local/probe",
			"args": []string{
				"-nomad", "https://${attr.nomad.advertise.address}",
				"-nomad", serverAPI,
				"-consul", "http://127.0.0.1:8500",
			},
		}
		task.Artifacts = []*nomadapi.TaskArtifact{{
			GetterSource:  &url,
			GetterMode:    pointer("file"),
			RelativeDest:  pointer("local/probe"),
			GetterOptions: map[string]string{"checksum": "sha256:" + sha256},
		}}
		task.Resources = &nomadapi.Resources{CPU: pointer(100), MemoryMB: pointer(64)}
		// More than the production jobs get: a task given its workload
		// identity, to show what even that cannot reach.
		task.Identity = &nomadapi.WorkloadIdentity{Env: true, File: true}
		group := nomadapi.NewTaskGroup(role, 1).
			Constrain(nomadapi.NewConstraint("${meta.slm_role}", "=", role)).
			AddTask(task)
		group.RestartPolicy = &nomadapi.RestartPolicy{Attempts: pointer(0), Mode: pointer("fail")}
		group.ReschedulePolicy = &nomadapi.ReschedulePolicy{Attempts: pointer(0), Unlimited: pointer(false)}
		job.AddTaskGroup(group)
	}
	return job
}

func pointer[T any](v T) *T { return &v }

// probeReport reads the probe's report from its task's stdout.
func probeReport(c *nomadapi.Client, alloc *nomadapi.Allocation) ([]probeResult, error) {
	rc, err := c.AllocFS().Cat(alloc, "alloc/logs/probe.stdout.0", nil)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var results []probeResult
	seen := map[string]bool{}
	s := bufio.NewScanner(rc)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		var r probeResult
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("report line %q: %w", s.Text(), err)
		}
		results = append(results, r)
		seen[r.Attempt] = true
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	for _, a := range probeAttempts {
		if !seen[a] {
			return results, fmt.Errorf("the report has no %q attempt (%d lines): the probe did not run to its end", a, len(results))
		}
	}
	return results, nil
}

// taskEvents is the probe task's events, for a failure message.
func taskEvents(a *nomadapi.Allocation) string {
	var out []string
	for _, st := range a.TaskStates {
		for _, e := range st.Events {
			out = append(out, e.Type+": "+e.DisplayMessage)
		}
	}
	return strings.Join(slices.Compact(out), "; ")
}
