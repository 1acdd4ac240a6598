package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/slm-mesh/slm-mesh/internal/nomadtest"
	"github.com/slm-mesh/slm-mesh/jobs"
)

// fakeNomad is an HTTP test double of the few Nomad API endpoints the
// submitter calls: status/leader, jobs/parse, jobs (register), job plan,
// evaluation, deployment, deployment allocations, job info, job
// allocations, latest deployment, deregister and variables. It answers with
// the shapes of the real API and records what it was sent, and the tests
// assert on both sides; a deployment's course (failed, timed out,
// interrupted) is the test's to script, which no real cluster allows. What
// it cannot fake, it does not: jobs/parse is Nomad's own parser (the agent
// binary's `nomad job run -output`), so the jobs the submitter registers
// are those a server would make of the templates. It listens on loopback
// only (httptest).
type fakeNomad struct {
	mu sync.Mutex

	// Behaviour, set before the test runs.
	forbidden  bool                         // every call but status/leader gets 403
	parseError string                       // jobs/parse answers 400 with this
	variables  map[string]map[string]string // items of each Nomad Variable by path
	deploy     map[string][]string          // statuses a job's deployment goes through; last one sticks
	running    map[string]int               // jobs already running, with their group's count
	// groups of jobs already running, by name with their counts, where a
	// job runs several (running then only says the job runs).
	runningGroups map[string]map[string]int
	nomad         string // the nomad binary whose parser jobs/parse is
	stderr        string // what every task wrote to stderr

	// Record of the calls.
	parsed       []api.JobsParseRequest
	registered   []string
	submissions  []*api.JobSubmission
	planned      []string
	deregistered []string
	polls        map[string]int
	preserve     map[string]bool // PreserveCounts of each registration
	plannedCount map[string]int  // the group count of each job planned
	// the count of each group ("job/group") as registered
	registeredCounts map[string]int
	watches          map[string][]string // index and wait of each deployment read
	logReads         []string            // query of each log read
	tokens           []string            // X-Nomad-Token of every call that had one
}

func newFake(t *testing.T) (*fakeNomad, *httptest.Server) {
	f := &fakeNomad{
		variables: map[string]map[string]string{
			"nomad/jobs/slm-inference": {"inference_token": "inference-from-nomad-variables", "inference_cert": "inference-cert", "inference_key": "inference-key"},
			"nomad/jobs/slm-caller": {"caller_token": "caller-from-nomad-variables", "inference_token": "inference-from-nomad-variables",
				"caller_cert": "caller-cert", "caller_key": "caller-key", "rpc_ca": "rpc-ca"},
			"nomad/jobs/slm-gateway": {"caller_token": "caller-from-nomad-variables", "rpc_ca": "rpc-ca"},
		},
		deploy:   map[string][]string{},
		polls:    map[string]int{},
		running:  map[string]int{},
		preserve: map[string]bool{}, plannedCount: map[string]int{}, watches: map[string][]string{},
		registeredCounts: map[string]int{}, runningGroups: map[string]map[string]int{},
		nomad: nomadtest.Binary(t),
	}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	return f, srv
}

// parse is jobs/parse: Nomad's parser (`nomad job run -output`, which
// never contacts an agent) on the job file and its variables.
func (f *fakeNomad) parse(req api.JobsParseRequest) (*api.Job, error) {
	dir, err := os.MkdirTemp("", "fake-nomad-parse-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	job, vars := filepath.Join(dir, "job.nomad.hcl"), filepath.Join(dir, "job.vars.hcl")
	if err := os.WriteFile(job, []byte(req.JobHCL), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(vars, []byte(req.Variables), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(f.nomad, "job", "run", "-output", "-var-file", vars, job)
	cmd.Env = append(os.Environ(), "NOMAD_ADDR=http://127.0.0.1:1")
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil, fmt.Errorf("%s", bytes.TrimSpace(exit.Stderr))
		}
		return nil, err
	}
	var reg struct{ Job *api.Job }
	if err := json.Unmarshal(out, &reg); err != nil || reg.Job == nil {
		return nil, fmt.Errorf("nomad job run -output: %v: %s", err, out)
	}
	return reg.Job, nil
}

func (f *fakeNomad) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	if tok := r.Header.Get("X-Nomad-Token"); tok != "" {
		f.tokens = append(f.tokens, tok)
	}
	path := r.URL.Path
	if path == "/v1/status/leader" {
		reply("127.0.0.1:4647")
		return
	}
	if f.forbidden {
		http.Error(w, "Permission denied", http.StatusForbidden)
		return
	}
	switch {
	case r.Method == http.MethodPut && path == "/v1/jobs/parse":
		var req api.JobsParseRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.parsed = append(f.parsed, req)
		if f.parseError != "" {
			http.Error(w, f.parseError, http.StatusBadRequest)
			return
		}
		job, err := f.parse(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reply(job)
	case r.Method == http.MethodPut && path == "/v1/jobs":
		var req api.JobRegisterRequest
		json.NewDecoder(r.Body).Decode(&req)
		id := *req.Job.ID
		f.preserve[id] = req.PreserveCounts
		for _, g := range req.Job.TaskGroups {
			if g.Name != nil && g.Count != nil {
				f.registeredCounts[id+"/"+*g.Name] = *g.Count
			}
		}
		f.registered = append(f.registered, id)
		f.submissions = append(f.submissions, req.Submission)
		reply(&api.JobRegisterResponse{EvalID: "eval-" + id, JobModifyIndex: 10})
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/v1/evaluation/eval-"):
		id := strings.TrimPrefix(path, "/v1/evaluation/eval-")
		reply(&api.Evaluation{ID: "eval-" + id, Status: "complete", DeploymentID: "dep-" + id})
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/v1/deployment/allocations/dep-"):
		id := strings.TrimPrefix(path, "/v1/deployment/allocations/dep-")
		// Five attempts of one failing allocation, as rescheduling leaves them.
		unhealthy := false
		var allocs []*api.AllocationListStub
		for i := range 5 {
			allocs = append(allocs, &api.AllocationListStub{
				ID: fmt.Sprintf("alloc%d-%s", i, id), Name: id + ".group[0]", NodeID: "node-a-id", NodeName: "node-a", ClientStatus: "failed",
				CreateTime:       int64(i),
				DeploymentStatus: &api.AllocDeploymentStatus{Healthy: &unhealthy},
				TaskStates: map[string]*api.TaskState{"task": {State: "dead", Failed: true, Restarts: 3, Events: []*api.TaskEvent{
					{Type: "Driver Failure", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano(), DisplayMessage: "exec: no such file: /usr/local/bin/" + id},
				}}},
			})
		}
		reply(allocs)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/v1/deployment/dep-"):
		// A blocking query, as Nomad answers it: the state's index is
		// X-Nomad-Index; a read with ?index= at or past it returns when
		// the state changes (here: at once when the sequence has a next
		// state, as if it changed meanwhile), or after ?wait=, or when the
		// client gives up.
		id := strings.TrimPrefix(path, "/v1/deployment/dep-")
		seq := f.deploy[id]
		if len(seq) == 0 {
			seq = []string{"running", "successful"}
		}
		q := r.URL.Query()
		f.watches[id] = append(f.watches[id], "index="+q.Get("index")+" wait="+q.Get("wait"))
		n := f.polls[id]
		if index, _ := strconv.Atoi(q.Get("index")); index > 0 && index >= 100+n {
			if n+1 < len(seq) {
				f.polls[id]++
				n++
			} else {
				wait, err := time.ParseDuration(q.Get("wait"))
				if err != nil {
					wait = 5 * time.Minute // Nomad's default
				}
				f.mu.Unlock()
				select {
				case <-r.Context().Done():
				case <-time.After(wait):
				}
				f.mu.Lock()
			}
		}
		w.Header().Set("X-Nomad-Index", strconv.Itoa(100+n))
		status := seq[n]
		healthy := 0
		if status == "successful" {
			healthy = 1
		}
		reply(&api.Deployment{ID: "dep-" + id, JobID: id, Status: status, StatusDescription: "Deployment is " + status,
			TaskGroups: map[string]*api.DeploymentState{"group": {DesiredTotal: 1, PlacedAllocs: 1, HealthyAllocs: healthy, DesiredCanaries: 1, PlacedCanaries: []string{"alloc"}}}})
	case r.Method == http.MethodPut && strings.HasSuffix(path, "/plan"):
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/v1/job/"), "/plan")
		var req api.JobPlanRequest
		json.NewDecoder(r.Body).Decode(&req)
		if req.Job != nil && len(req.Job.TaskGroups) == 1 && req.Job.TaskGroups[0].Count != nil {
			f.plannedCount[id] = *req.Job.TaskGroups[0].Count
		}
		f.planned = append(f.planned, id)
		reply(&api.JobPlanResponse{
			Diff: &api.JobDiff{Type: "Edited", ID: id, TaskGroups: []*api.TaskGroupDiff{{
				Type: "Edited", Name: "group",
				Fields: []*api.FieldDiff{{Type: "Edited", Name: "Count", Old: "1", New: "2"}},
			}}},
			Annotations: &api.PlanAnnotations{DesiredTGUpdates: map[string]*api.DesiredUpdates{"group": {Place: 1, Ignore: 1}}},
		})
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/v1/client/fs/logs/"):
		// The log stream: JSON frames of base64 data, as the client
		// agent sends them (the server forwards the request there).
		q := r.URL.Query()
		f.logReads = append(f.logReads, fmt.Sprintf("%s task=%s type=%s origin=%s offset=%s follow=%s",
			strings.TrimPrefix(path, "/v1/client/fs/logs/"), q.Get("task"), q.Get("type"), q.Get("origin"), q.Get("offset"), q.Get("follow")))
		data := []byte(f.stderr)
		if offset, _ := strconv.Atoi(q.Get("offset")); q.Get("origin") == "end" && offset < len(data) {
			data = data[len(data)-offset:]
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		for len(data) > 0 { // frames of up to 1000 bytes
			n := min(len(data), 1000)
			enc.Encode(&api.StreamFrame{Data: data[:n], File: "alloc/logs/task.stderr.0"})
			data = data[n:]
		}
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/v1/var/"):
		items, ok := f.variables[strings.TrimPrefix(path, "/v1/var/")]
		if !ok {
			http.Error(w, "variable not found", http.StatusNotFound)
			return
		}
		reply(&api.Variable{Path: strings.TrimPrefix(path, "/v1/var/"), Items: items})
	case strings.HasPrefix(path, "/v1/job/"):
		rest := strings.TrimPrefix(path, "/v1/job/")
		id, sub, _ := strings.Cut(rest, "/")
		count, running := f.running[id]
		if !slices.Contains(f.registered, id) && !running {
			http.Error(w, "job not found", http.StatusNotFound)
			return
		}
		switch {
		case r.Method == http.MethodDelete && sub == "":
			f.deregistered = append(f.deregistered, id+" purge="+r.URL.Query().Get("purge"))
			reply(&api.JobDeregisterResponse{EvalID: "eval-stop-" + id})
		case sub == "":
			status, version, group := "running", uint64(3), strings.TrimPrefix(id, "slm-")
			if !running {
				count = 1
			}
			groups := []*api.TaskGroup{{Name: &group, Count: &count}}
			if rg := f.runningGroups[id]; running && rg != nil {
				groups = nil
				for _, name := range slices.Sorted(maps.Keys(rg)) {
					groups = append(groups, &api.TaskGroup{Name: new(name), Count: new(rg[name])})
				}
			}
			reply(&api.Job{ID: &id, Status: &status, Version: &version, TaskGroups: groups})
		case sub == "deployment":
			reply(&api.Deployment{ID: "dep-" + id, Status: "successful", StatusDescription: "Deployment completed successfully",
				TaskGroups: map[string]*api.DeploymentState{"group": {DesiredTotal: 1, PlacedAllocs: 1, HealthyAllocs: 1}}})
		case sub == "allocations":
			healthy := true
			reply([]*api.AllocationListStub{{ID: "alloc-" + id + "-0002", NodeName: "node-b", ClientStatus: "running",
				DeploymentStatus: &api.AllocDeploymentStatus{Healthy: &healthy}}})
		default:
			http.NotFound(w, r)
		}
	default:
		http.Error(w, "the test double does not serve "+r.Method+" "+path, http.StatusNotImplemented)
	}
}

// submit runs the command line against the double, with a short poll.
func submit(t *testing.T, srv *httptest.Server, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return submitWithToken(t, srv, "", args...)
}

// submitWithToken is submit with NOMAD_TOKEN set to token.
func submitWithToken(t *testing.T, srv *httptest.Server, token string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	// The environment must not point the test at a real cluster.
	for _, v := range []string{"NOMAD_ADDR", "NOMAD_REGION", "NOMAD_NAMESPACE"} {
		t.Setenv(v, "")
	}
	t.Setenv("NOMAD_TOKEN", token)
	if srv != nil {
		args = append(args, "-address", srv.URL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return submitCtx(t, ctx, srv, args...)
}

// submitCtx is submit with ctx, which stands for main's signal context.
func submitCtx(t *testing.T, ctx context.Context, srv *httptest.Server, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	if srv != nil && !slices.Contains(args, "-address") {
		args = append(args, "-address", srv.URL)
	}
	pollInterval = time.Millisecond
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunRegistersInOrderAndWaits(t *testing.T) {
	f, srv := newFake(t)
	code, out, errOut := submit(t, srv, "-var", "version=1.4.0", "-var", "caller_count=3")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	want := []string{"slm-inference", "slm-caller", "slm-gateway"}
	if !slices.Equal(f.registered, want) {
		t.Errorf("registered %v, want %v", f.registered, want)
	}
	// Every job was parsed by the server before the first registration,
	// with the operator's values.
	if len(f.parsed) != 3 {
		t.Fatalf("parsed %d jobs, want 3", len(f.parsed))
	}
	for _, req := range f.parsed {
		if !strings.Contains(req.JobHCL, `default     = "1.4.0"`) || !strings.Contains(req.Variables, `"1.4.0"`) {
			t.Errorf("parse request does not carry version 1.4.0:\n%s", req.Variables)
		}
		if strings.Contains(req.JobHCL, "from-nomad-variables") {
			t.Error("an RPC token was written into the job")
		}
	}
	if !strings.Contains(f.parsed[1].Variables, "caller_count = 3") {
		t.Errorf("caller variables: %q", f.parsed[1].Variables)
	}
	for _, sub := range f.submissions {
		if sub == nil || sub.Format != "hcl2" || !strings.Contains(sub.Source, "1.4.0") {
			t.Errorf("job submission %+v", sub)
		}
	}
	for _, line := range []string{
		"==> slm-inference registered (evaluation eval-slm, new job: count from the job's variables)",
		"==> slm-caller registered (evaluation eval-slm, count from -var)",
		"deployment dep-slm- running; group: 1/1 placed, 0 healthy, 0 unhealthy, canaries 1/1",
		"==> slm-gateway healthy",
		"==> all 3 jobs are deployed and healthy",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
}

func TestRunFailedDeployment(t *testing.T) {
	f, srv := newFake(t)
	f.deploy["slm-caller"] = []string{"running", "failed"}
	code, out, errOut := submit(t, srv)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !slices.Equal(f.registered, []string{"slm-inference", "slm-caller"}) {
		t.Errorf("registered %v: the gateway must not follow a failed caller", f.registered)
	}
	if !strings.Contains(errOut, "deployment failed: slm-caller: Deployment is failed") {
		t.Errorf("stderr: %s", errOut)
	}
	// The failing allocation's task events are shown.
	// The newest attempts first, the older ones counted.
	if !strings.Contains(out, "allocation alloc4-s (slm-caller.group[0]) on node-a: failed") ||
		strings.Contains(out, "alloc1-s") || !strings.Contains(out, "(2 older failing allocations not shown)") ||
		!strings.Contains(out, "Driver Failure") || !strings.Contains(out, "no such file: /usr/local/bin/slm-caller") {
		t.Errorf("task events missing:\n%s", out)
	}
}

func TestRunTimeout(t *testing.T) {
	f, srv := newFake(t)
	f.deploy["slm-inference"] = []string{"running"}
	code, out, errOut := submit(t, srv, "-timeout", "50ms")
	if code != 1 || !strings.Contains(errOut, "deployment did not finish in time: slm-inference") {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	if !strings.Contains(out, "Driver Failure") {
		t.Errorf("the unhealthy allocation is not shown:\n%s", out)
	}
	if len(f.registered) != 1 {
		t.Errorf("registered %v after a timeout", f.registered)
	}
}

func TestRunNeedsTheSecrets(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(map[string]map[string]string)
		want string
	}{
		{"no variable", func(v map[string]map[string]string) { delete(v, "nomad/jobs/slm-caller") },
			"Nomad Variable nomad/jobs/slm-caller has no item caller_token"},
		{"an item missing", func(v map[string]map[string]string) { delete(v["nomad/jobs/slm-caller"], "inference_token") },
			"Nomad Variable nomad/jobs/slm-caller has no item inference_token"},
		{"the ends of a hop differ", func(v map[string]map[string]string) { v["nomad/jobs/slm-gateway"]["caller_token"] = "another" },
			"item caller_token differs between Nomad Variables nomad/jobs/slm-caller and nomad/jobs/slm-gateway"},
		{"a certificate missing", func(v map[string]map[string]string) { delete(v["nomad/jobs/slm-inference"], "inference_key") },
			"Nomad Variable nomad/jobs/slm-inference has no item inference_key"},
		{"the CAs of a hop differ", func(v map[string]map[string]string) { v["nomad/jobs/slm-gateway"]["rpc_ca"] = "another" },
			"item rpc_ca differs between Nomad Variables nomad/jobs/slm-caller and nomad/jobs/slm-gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFake(t)
			tc.edit(f.variables)
			code, _, errOut := submit(t, srv)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			if len(f.registered) != 0 {
				t.Errorf("registered %v without the secrets", f.registered)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.vars.hcl")
	os.WriteFile(badFile, []byte("caller_count = \n"), 0o644)

	tests := []struct {
		name   string
		setup  func(*fakeNomad)
		noSrv  bool
		args   []string
		code   int
		stderr string
	}{
		{name: "unreachable", noSrv: true, args: []string{"status", "-address", "http://127.0.0.1:1"}, code: 1,
			stderr: "no Nomad agent reachable at http://127.0.0.1:1"},
		{name: "acl denied", setup: func(f *fakeNomad) { f.forbidden = true }, code: 1,
			stderr: "permission denied by Nomad ACLs: parse slm-inference"},
		{name: "parse error", setup: func(f *fakeNomad) { f.parseError = "1:1: Unsupported argument" }, code: 1,
			stderr: "Nomad could not parse the job slm-inference (jobs/inference.nomad.hcl): 1:1: Unsupported argument"},
		{name: "bad var file", args: []string{"-var-file", badFile}, code: 1, stderr: "bad.vars.hcl:1"},
		{name: "missing var file", args: []string{"-var-file", filepath.Join(dir, "nope.hcl")}, code: 1, stderr: "nope.hcl"},
		{name: "undeclared variable", args: []string{"-var", "model=x"}, code: 1, stderr: "not declared by any job: model"},
		{name: "unknown job", args: []string{"plan", "-job", "router"}, code: 1, stderr: `unknown job "router"`},
		{name: "unknown command", args: []string{"deploy"}, code: 2, stderr: `unknown command "deploy"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFake(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			if tc.noSrv {
				srv = nil
			}
			code, _, errOut := submit(t, srv, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.stderr)
			}
			if len(f.registered) != 0 {
				t.Errorf("registered %v", f.registered)
			}
		})
	}
}

// TestNomadTokenStaysOut: the operator's NOMAD_TOKEN goes to Nomad in the
// X-Nomad-Token header and nowhere else — not in the output, not in an
// error, not in the jobs registered.
func TestNomadTokenStaysOut(t *testing.T) {
	const secret = "nomad-token-5e1f0c2a-do-not-print"
	for _, forbidden := range []bool{false, true} {
		t.Run(fmt.Sprintf("forbidden=%v", forbidden), func(t *testing.T) {
			f, srv := newFake(t)
			f.forbidden = forbidden
			code, out, errOut := submitWithToken(t, srv, secret, "run")
			if want := forbidden; (code != 0) != want {
				t.Fatalf("exit code %d, want failure %v\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
			}
			if !slices.Contains(f.tokens, secret) {
				t.Errorf("no call carried the token (got %d tokens): the check below would prove nothing", len(f.tokens))
			}
			sent, err := json.Marshal(f.submissions)
			if err != nil {
				t.Fatal(err)
			}
			for where, text := range map[string]string{"stdout": out, "stderr": errOut, "registered jobs": string(sent)} {
				if strings.Contains(text, secret) {
					t.Errorf("the Nomad token appears in %s", where)
				}
			}
		})
	}
}

func TestACLDeniedIsTyped(t *testing.T) {
	f, srv := newFake(t)
	f.forbidden = true
	s, err := New(&api.Config{Address: srv.URL}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := jobs.RenderAll(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Plan(context.Background(), rendered); !errors.Is(err, ErrACLDenied) {
		t.Errorf("err = %v, want ErrACLDenied", err)
	}
}

func TestPlan(t *testing.T) {
	f, srv := newFake(t)
	code, out, errOut := submit(t, srv, "plan", "-job", "gateway", "-job", "caller")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !slices.Equal(f.planned, []string{"slm-caller", "slm-gateway"}) {
		t.Errorf("planned %v", f.planned)
	}
	for _, line := range []string{`~ slm-caller: Edited`, `~ group "group"`, `~ Count: "1" => "2"`, "group group: 1 to place"} {
		if !strings.Contains(out, line) {
			t.Errorf("plan output lacks %q:\n%s", line, out)
		}
	}
	if len(f.registered) != 0 {
		t.Error("plan registered a job")
	}
}

func TestStatusAndStop(t *testing.T) {
	f, srv := newFake(t)
	f.registered = []string{"slm-caller", "slm-gateway"} // inference is not running

	code, out, errOut := submit(t, srv, "status")
	if code != 0 {
		t.Fatalf("status exit %d: %s", code, errOut)
	}
	for _, line := range []string{"slm-inference: not registered", "slm-caller: running, version 3", "allocation alloc-sl on node-b: running, healthy"} {
		if !strings.Contains(out, line) {
			t.Errorf("status output lacks %q:\n%s", line, out)
		}
	}

	code, out, errOut = submit(t, srv, "stop", "-purge")
	if code != 0 {
		t.Fatalf("stop exit %d: %s", code, errOut)
	}
	// The public edge goes first.
	if want := []string{"slm-gateway purge=true", "slm-caller purge=true"}; !slices.Equal(f.deregistered, want) {
		t.Errorf("deregistered %v, want %v", f.deregistered, want)
	}
	if !strings.Contains(out, "slm-gateway: stopped and purged") || !strings.Contains(out, "slm-inference: not registered") {
		t.Errorf("stop output:\n%s", out)
	}
}

func TestRenderTouchesNothing(t *testing.T) {
	code, out, errOut := submit(t, nil, "render", "-address", "http://127.0.0.1:1", "-var-file", "../../jobs/local.vars.hcl", "-var", "bin_dir=/srv/slm/bin")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, s := range []string{`# ---- slm-inference (jobs/inference.nomad.hcl) ----`, `job "slm-gateway"`, `default     = "raw_exec"`, `default     = "/srv/slm/bin"`} {
		if !strings.Contains(out, s) {
			t.Errorf("render output lacks %q", s)
		}
	}
}

// TestRunKeepsRunningCounts: a new version keeps the count an operator set
// with `nomad job scale` (PreserveCounts), unless -var <group>_count= says
// otherwise; a count in a -var-file does not change a running job.
func TestRunKeepsRunningCounts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "counts.vars.hcl")
	if err := os.WriteFile(file, []byte("inference_count = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, srv := newFake(t)
	f.running = map[string]int{"slm-caller": 2, "slm-gateway": 2} // inference is new
	code, out, errOut := submit(t, srv, "-var-file", file, "-var", "caller_count=4")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	want := map[string]bool{"slm-inference": true, "slm-caller": false, "slm-gateway": true}
	if !maps.Equal(f.preserve, want) {
		t.Errorf("PreserveCounts %v, want %v", f.preserve, want)
	}
	// A job not yet registered has no running count to keep: saying so
	// would hide that the -var-file's count is the one it starts with.
	for _, line := range []string{
		"slm-inference registered (evaluation eval-slm, new job: count from the job's variables)",
		"slm-caller registered (evaluation eval-slm, count from -var)",
		"slm-gateway registered (evaluation eval-slm, running count kept)",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
}

// TestPlanShowsRunningCounts: the plan API has no preserve-counts option,
// so plan gives the job the running counts, as run would keep them.
func TestPlanShowsRunningCounts(t *testing.T) {
	f, srv := newFake(t)
	f.running = map[string]int{"slm-caller": 5, "slm-gateway": 2} // scaled with `nomad job scale`
	code, out, errOut := submit(t, srv, "plan", "-var", "gateway_count=1")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// inference is not running: the job's own count. caller: the running
	// 5. gateway: the -var.
	want := map[string]int{"slm-inference": 1, "slm-caller": 5, "slm-gateway": 1}
	if !maps.Equal(f.plannedCount, want) {
		t.Errorf("planned counts %v, want %v", f.plannedCount, want)
	}
}

// TestFailedDeploymentShowsStderr: the cause of a failed deployment is in
// the task's stderr, so its last lines are printed with the task events.
func TestFailedDeploymentShowsStderr(t *testing.T) {
	f, srv := newFake(t)
	f.deploy["slm-inference"] = []string{"running", "failed"}
	var log strings.Builder
	log.WriteString(strings.Repeat("x", 5000) + "\n") // cut off: more than the tail
	for i := range 30 {
		fmt.Fprintf(&log, "line %02d\n", i)
	}
	log.WriteString("inference: load model: open /srv/slm-models/gemma.gguf: permission denied\n")
	f.stderr = log.String()

	code, out, errOut := submit(t, srv)
	if code != 1 || !strings.Contains(errOut, "deployment failed: slm-inference") {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{"stderr, last lines:", "| inference: load model: open /srv/slm-models/gemma.gguf: permission denied", "| line 29", "| line 11"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"line 10", "xxxx"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output has %q, beyond the %d-line tail:\n%s", unwanted, stderrTailLines, out)
		}
	}
	if len(f.logReads) != maxAllocsShown {
		t.Errorf("%d log reads, want one per allocation shown (%d): %v", len(f.logReads), maxAllocsShown, f.logReads)
	}
	if want := fmt.Sprintf("alloc4-slm-inference task=task type=stderr origin=end offset=%d follow=false", stderrTailBytes); len(f.logReads) == 0 || f.logReads[0] != want {
		t.Errorf("log reads %v, want the first %q", f.logReads, want)
	}
}

// TestInterruptIsNotATimeout: Ctrl-C (main's signal context ending) while
// a deployment is watched is reported as an interruption, exit 130, and
// ends the blocking query in flight rather than waiting it out.
func TestInterruptIsNotATimeout(t *testing.T) {
	f, srv := newFake(t)
	f.deploy["slm-inference"] = []string{"running"} // never finishes
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Ctrl-C once the deployment is being watched.
		for range 2000 {
			f.mu.Lock()
			watching := len(f.watches["slm-inference"]) >= 2
			f.mu.Unlock()
			if watching {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	code, out, errOut := submitCtx(t, ctx, srv)
	if code != 130 || !strings.Contains(errOut, "submit: interrupted while waiting for deployment dep-slm- of slm-inference") {
		t.Errorf("exit %d, stderr %q; want 130 and an interruption", code, errOut)
	}
	if strings.Contains(errOut, "in time") || strings.Contains(out, "Driver Failure") {
		t.Errorf("an interruption reported as a timeout:\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
}

// TestWatchUsesBlockingQueries: after the first read, each read of the
// deployment waits on the index the previous one returned, so the
// submitter learns of a change at once without polling.
func TestWatchUsesBlockingQueries(t *testing.T) {
	f, srv := newFake(t)
	f.deploy["slm-caller"] = []string{"pending", "running", "running", "successful"}
	code, out, errOut := submit(t, srv, "-job", "caller")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	want := []string{"index= wait=300000ms", "index=100 wait=300000ms", "index=101 wait=300000ms", "index=102 wait=300000ms"}
	if got := f.watches["slm-caller"]; !slices.Equal(got, want) {
		t.Errorf("deployment reads %q, want %q", got, want)
	}
}

// TestRunKeepsEachModelsCount: the inference job serves each model by a
// group of its own; -var inference_count= scales the default model's
// group, and every other group keeps its running count though Nomad's
// PreserveCounts, all or nothing, is then off; a model new to the job
// starts with the count extra_models gives it.
func TestRunKeepsEachModelsCount(t *testing.T) {
	sha := strings.Repeat("a", 64)
	file := filepath.Join(t.TempDir(), "family.vars.hcl")
	if err := os.WriteFile(file, []byte(`extra_models = [
  { name = "embeddinggemma-300m", url = "https://models.example.com/e.gguf", sha256 = "`+sha+`", count = 1 },
  { name = "functiongemma-270m", url = "https://models.example.com/f.gguf", sha256 = "`+sha+`", count = 2 },
]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	f, srv := newFake(t)
	// Running: the default model and the embedding model, scaled to 3 with
	// `nomad job scale`; the function-calling model is new.
	f.running = map[string]int{"slm-inference": 0}
	f.runningGroups = map[string]map[string]int{"slm-inference": {"inference": 2, "inference-embeddinggemma-300m": 3}}
	code, out, errOut := submit(t, srv, "-job", "inference", "-var-file", file, "-var", "inference_count=4")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	want := map[string]int{
		"slm-inference/inference":                     4, // -var
		"slm-inference/inference-embeddinggemma-300m": 3, // running
		"slm-inference/inference-functiongemma-270m":  2, // new: extra_models
	}
	if !maps.Equal(f.registeredCounts, want) {
		t.Errorf("registered counts %v, want %v", f.registeredCounts, want)
	}
	if f.preserve["slm-inference"] {
		t.Error("PreserveCounts on: the server would keep inference's running count of 2 over -var inference_count=4")
	}
	if line := "slm-inference registered (evaluation eval-slm, count from -var, other groups' running counts kept)"; !strings.Contains(out, line) {
		t.Errorf("output lacks %q:\n%s", line, out)
	}
}
