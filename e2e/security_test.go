package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/consulagent"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// secrets are the distinctive values TestSecretsStayOut gives the mesh, and
// the wrong ones it tries: none may appear anywhere a client or an operator
// can read.
var secrets = map[string]string{
	"API key":         "sk-e2e-key-a1b2c3d4e5",
	"second API key":  "sk-e2e-key-f6a7b8c9d0",
	"wrong API key":   "sk-e2e-wrong-0a9b8c7d6e",
	"RPC token":       "rpc-e2e-token-5e4d3c2b1a",
	"wrong RPC token": "rpc-e2e-wrong-1f2e3d4c5b",
	"Consul token":    "consul-e2e-token-6a5b4c3d2e",
	"Nomad token":     "nomad-e2e-token-7b6c5d4e3f",
}

// TestSecretsStayOut runs a mesh with API keys, an RPC token and Consul and
// Nomad tokens in its environment, all at trace log level, and exercises it:
// good requests streamed and not, requests with a wrong, missing or
// misplaced key, failing requests, /health and /metrics of every service,
// RPC dials with a wrong token, a second gateway whose token is wrong, and
// -h and a bad flag on every binary with the secrets in the environment.
// Then it stops the mesh and looks for every secret in every log file,
// every response, every error, the Consul registrations and the processes'
// command lines (which any user of the machine can read). One found is a
// failure; the search is first shown to find a secret planted in a copy.
func TestSecretsStayOut(t *testing.T) {
	t.Parallel()
	consul := ""
	if _, err := consulagent.FindBinary(modeltest.RepoRoot()); err == nil || os.Getenv("CI") != "" {
		consul = consulBinary(t)
	} else {
		t.Logf("no Consul agent, so static discovery: %v", err)
	}
	m := startMesh(t, localmesh.Config{
		APIKeys:   secrets["API key"] + "," + secrets["second API key"],
		RPCToken:  secrets["RPC token"],
		ConsulBin: consul,
		Env:       []string{"CONSUL_HTTP_TOKEN=" + secrets["Consul token"], "NOMAD_TOKEN=" + secrets["Nomad token"]},
		ExtraArgs: map[string][]string{
			"gateway":   {"-log-level", "trace"},
			"caller":    {"-log-level", "trace"},
			"inference": {"-log-level", "trace"},
		},
	})
	seen := texts{} // everything read from the mesh, by where it came from

	// The processes hold the secrets in their environment, readable by
	// their user only, and not on their command line.
	for _, name := range []string{"gateway", "caller", "inference-1"} {
		pid := strconv.Itoa(m.Proc(name).Pid())
		cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		seen.add("command line of "+name, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		if environ, err := os.ReadFile("/proc/" + pid + "/environ"); err != nil || !bytes.Contains(environ, []byte(secrets["Consul token"])) {
			t.Errorf("%s does not have the Consul token in its environment (%v): the test proves nothing about it", name, err)
		}
	}

	hi := `{"messages":[{"role":"user","content":"` + story + `"}],"max_tokens":8`
	bearer := func(key string) http.Header { return http.Header{"Authorization": {"Bearer " + key}} }
	exchanges := []struct {
		name, method, path, body string
		header                   http.Header
		status                   int
	}{
		{"chat", "POST", "/v1/chat/completions", hi + `}`, nil, 200},
		{"chat, second key, streamed", "POST", "/v1/chat/completions", hi + `,"stream":true}`, bearer(secrets["second API key"]), 200},
		{"models", "GET", "/v1/models", "", nil, 200},
		{"wrong key", "POST", "/v1/chat/completions", hi + `}`, bearer(secrets["wrong API key"]), 401},
		{"missing key", "POST", "/v1/chat/completions", hi + `}`, http.Header{"Authorization": {""}}, 401},
		{"key without Bearer", "POST", "/v1/chat/completions", hi + `}`, http.Header{"Authorization": {secrets["API key"]}}, 401},
		{"key as basic auth", "GET", "/v1/models", "", http.Header{"Authorization": {"Basic " + secrets["API key"]}}, 401},
		{"key in X-Api-Key only", "GET", "/v1/models", "", http.Header{"Authorization": {""}, "X-Api-Key": {secrets["API key"]}}, 401},
		{"wrong key, streamed", "POST", "/v1/chat/completions", hi + `,"stream":true}`, bearer(secrets["wrong API key"]), 401},
		{"bad JSON", "POST", "/v1/chat/completions", `{"messages":[`, nil, 400},
		{"unknown model", "POST", "/v1/chat/completions", hi + `,"model":"gpt-nothing"}`, nil, 404},
		{"over the context", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":1500}`, nil, 400},
		{"unknown route", "GET", "/v1/nothing", "", nil, 404},
		{"health", "GET", "/health", "", nil, 200},
		{"metrics", "GET", "/metrics", "", nil, 200},
	}
	for _, e := range exchanges {
		resp, body := m.request(t, e.method, e.path, e.body, e.header)
		if resp.StatusCode != e.status {
			t.Errorf("%s: %d %s, want %d", e.name, resp.StatusCode, body, e.status)
		}
		seen.addResponse("gateway: "+e.name, resp, body)
	}
	for _, name := range []string{"caller", "inference-1"} {
		for _, path := range []string{"/health", "/metrics"} {
			resp, body, err := get("http://"+m.Addr(name)+path, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s %s: %v %s", name, path, err, body)
			}
			seen.addResponse(name+" "+path, resp, body)
		}
	}

	// Peers without the token are refused at the handshake.
	for _, name := range []string{"caller", "inference-1"} {
		for _, token := range []string{secrets["wrong RPC token"], ""} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := rpc.Dial(ctx, m.Addr(name), rpc.ClientConfig{Token: token})
			cancel()
			if err == nil {
				c.Close()
				t.Fatalf("%s admitted an RPC peer with token %q", name, token)
			}
			if !strings.Contains(err.Error(), "401") {
				t.Errorf("dial %s with token %q: %v, want a 401", name, token, err)
			}
			seen.add(fmt.Sprintf("RPC dial error from %s (token %q)", name, token), []byte(err.Error()))
		}
		resp, body, err := get("http://"+m.Addr(name)+rpc.PathRPC, bearer(secrets["wrong RPC token"]))
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s on %s with a wrong token: %v %v", rpc.PathRPC, name, resp, err)
		} else {
			seen.addResponse(name+" "+rpc.PathRPC+" with a wrong token", resp, body)
		}
	}

	// A gateway configured with a wrong token cannot reach the caller, and
	// says so without showing the token.
	wrong, stopWrong := startGateway(t, m, "gateway-wrong-token",
		[]string{"-log-level", "trace", "-discovery", "static", "-caller", m.Addr("caller")}, "SLM_RPC_TOKEN="+secrets["wrong RPC token"])
	for _, e := range []struct{ method, path, body string }{{"GET", "/health", ""}, {"POST", "/v1/chat/completions", hi + `}`}} {
		req, _ := http.NewRequest(e.method, wrong+e.path, strings.NewReader(e.body))
		resp, b, err := do(req)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s of the gateway with a wrong token: %v %s, want 503", e.path, err, b)
			continue
		}
		seen.addResponse("gateway with a wrong token: "+e.path, resp, b)
	}

	if consul != "" {
		for _, path := range []string{"/v1/agent/services", "/v1/agent/checks"} {
			resp, body, err := get("http://"+m.ConsulAddr()+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			seen.addResponse("Consul "+path, resp, body)
		}
	}

	// Usage text, from -h and from a flag error, as an operator (or a
	// Nomad task's log) sees it.
	for _, name := range []string{"gateway", "caller", "inference"} {
		for _, args := range [][]string{{"-h"}, {"-no-such-flag"}} {
			cmd := exec.Command(filepath.Join(binaries(t), name), args...)
			cmd.Env = append(os.Environ(), "SLM_RPC_TOKEN="+secrets["RPC token"], "SLM_API_KEYS="+secrets["API key"],
				"CONSUL_HTTP_TOKEN="+secrets["Consul token"], "NOMAD_TOKEN="+secrets["Nomad token"])
			out, _ := cmd.CombinedOutput()
			if !bytes.Contains(out, []byte("-rpc-token")) {
				t.Errorf("%s %v printed no usage:\n%s", name, args, out)
			}
			seen.add(fmt.Sprintf("%s %s", name, strings.Join(args, " ")), out)
		}
	}

	// Stopped, so that the logs are complete, shutdown included.
	stopWrong()
	m.Stop()
	logs := texts{}
	err := filepath.WalkDir(m.Dir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return err
		}
		b, err := os.ReadFile(path)
		logs.add(filepath.Base(path), b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The logs are the real ones: they recorded the refusals.
	for file, want := range map[string]string{
		"gateway.log":             "rejected API key",
		"caller.log":              "rejected RPC connection",
		"inference-1.log":         "rejected RPC connection",
		"gateway-wrong-token.log": "server refused the token",
	} {
		if !bytes.Contains(logs[file], []byte(want)) {
			t.Errorf("%s lacks %q", file, want)
		}
	}
	for place, text := range logs {
		seen.add(place, text)
	}

	leaks := seen.leaks(secrets)
	for _, l := range leaks {
		t.Error(l)
	}
	// The search finds a secret wherever it is: in a copy with one more
	// line, it finds one more leak.
	planted := texts{}
	for place, text := range seen {
		planted[place] = text
	}
	planted.add("gateway.log", []byte("\n2026-01-02T03:04:05.000Z [INFO]  gateway: planted: key="+secrets["second API key"]))
	if found := planted.leaks(secrets); len(found) != len(leaks)+1 || !strings.Contains(strings.Join(found, "\n"), "planted") {
		t.Errorf("the search missed the planted secret: %q", found)
	}
	t.Logf("searched %d texts (%d log files) for %d secrets", len(seen), len(logs), len(secrets))
}

// texts are what a test read, by where it read it.
type texts map[string][]byte

func (ts texts) add(place string, b []byte) { ts[place] = append(ts[place], b...) }

// addResponse adds the status line, the headers and the body of a response.
func (ts texts) addResponse(place string, resp *http.Response, body []byte) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s\n", resp.Proto, resp.Status)
	_ = resp.Header.Write(&b)
	b.WriteString("\n")
	b.Write(body)
	ts.add(place, b.Bytes())
}

// leaks names every line, in every text, that holds one of the secrets,
// sorted.
func (ts texts) leaks(secrets map[string]string) []string {
	var out []string
	for place, text := range ts {
		for i, line := range bytes.Split(text, []byte("\n")) {
			for what, secret := range secrets {
				if bytes.Contains(line, []byte(secret)) {
					out = append(out, fmt.Sprintf("the %s is in %s, line %d: %s", what, place, i+1, line))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// get sends a GET with header to url and reads the whole response.
func get(url string, header http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return do(req)
}

// do sends req and reads the whole response.
func do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp, b.Bytes(), err
}

// startGateway starts another gateway process beside m's, on a free port,
// with args and env added, logging to <name>.log in m's directory; it stops
// the process when t ends, or when stop is called. It returns the gateway's
// base URL once the gateway answers /health, whatever the status.
func startGateway(t *testing.T, m *mesh, name string, args []string, env ...string) (url string, stop func()) {
	t.Helper()
	port, err := localmesh.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	logf, err := os.Create(filepath.Join(m.Dir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binaries(t), "gateway"), append([]string{"-addr", addr}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Like localmesh's processes: gone with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
			logf.Close()
		}
	}
	t.Cleanup(stop)
	url = "http://" + addr
	if !eventually(30*time.Second, 50*time.Millisecond, func() bool {
		resp, err := httpClient.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}) {
		stop()
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("%s did not answer /health:\n%s", name, b)
	}
	return url, stop
}
