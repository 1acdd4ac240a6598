package drain

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"

	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/nomadtest"
)

// root is the repository root, from this package's directory.
const root = "../../.."

// imds stands in for the EC2 instance metadata service (IMDSv2), which
// only exists on EC2: a session token on PUT, then the paths set, and 404
// for every other path, as on an instance outside an Auto Scaling group
// or without a Spot notice.
type imds struct {
	mu    sync.Mutex
	paths map[string]string
	polls int // requests for the lifecycle state
}

const imdsToken = "imds-session-token"

func (m *imds) set(path, value string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if value == "" {
		delete(m.paths, path)
		return
	}
	m.paths[path] = value
}

func (m *imds) pollCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.polls
}

func (m *imds) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
		if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "missing TTL", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, imdsToken)
		return
	}
	if r.Header.Get("X-aws-ec2-metadata-token") != imdsToken {
		http.Error(w, "IMDSv2 token required", http.StatusUnauthorized)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	path := strings.TrimPrefix(r.URL.Path, "/latest/meta-data/")
	if path == "autoscaling/target-lifecycle-state" {
		m.polls++
	}
	v, ok := m.paths[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = io.WriteString(w, v)
}

// awsCLI stands in for the AWS CLI (AWS cannot run here): it records
// every call and answers the two the script makes, the token from SSM
// (the file $AWS_TOKEN_FILE) and complete-lifecycle-action.
const awsCLI = `#!/bin/sh
echo "$*" >>"$AWS_LOG"
case "$1 $2" in
"ssm get-parameter") cat "$AWS_TOKEN_FILE" ;;
"autoscaling complete-lifecycle-action") ;;
*) echo "unexpected aws call: $*" >&2; exit 1 ;;
esac
`

// nomadAgent is a real Nomad agent, server and client, with ACLs on and
// mutual TLS on its HTTP API, as the nodes' agents have.
type nomadAgent struct {
	addr, mgmt, clientIDFile string
	// tls: the agents' CA and the agent's certificate and key (PEM files),
	// which drain.sh presents as the node's own.
	caFile, certFile, keyFile string
	client                    *http.Client
}

// writeCerts makes a CA and, signed by it, one certificate for the agent
// (server and client names of region global, localhost, 127.0.0.1; server
// and client auth), as terraform/aws makes the nodes'.
func writeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, agentKey := key(), key()
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test agent CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server.global.nomad"},
		DNSNames:    []string{"server.global.nomad", "client.global.nomad", "localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &agentKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(agentKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("agent.pem", "CERTIFICATE", leafDER), write("agent-key.pem", "EC PRIVATE KEY", keyDER)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (a *nomadAgent) call(t *testing.T, token, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Nomad-Token", token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

// waitFor polls cond every 200ms for at most limit; the limit only keeps a
// broken run from hanging, nothing is measured.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func startNomad(t *testing.T, nomad string) *nomadAgent {
	t.Helper()
	dir := t.TempDir()
	caFile, certFile, keyFile := writeCerts(t, dir)
	httpPort, rpcPort, serfPort := freePort(t), freePort(t), freePort(t)
	config := fmt.Sprintf(`data_dir  = %q
bind_addr = "127.0.0.1"
advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}
ports {
  http = %d
  rpc  = %d
  serf = %d
}
acl {
  enabled = true
}
server {
  enabled          = true
  bootstrap_expect = 1
}
client {
  enabled       = true
  cgroup_parent = "slm-drain-test.slice"
}
tls {
  http                = true
  rpc                 = true
  ca_file             = %q
  cert_file           = %q
  key_file            = %q
  verify_https_client = true
}
plugin "raw_exec" {
  config {
    enabled = false
  }
}
disable_update_check = true
`, filepath.Join(dir, "data"), httpPort, rpcPort, serfPort, caFile, certFile, keyFile)
	cfg := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nomad, "agent", "-config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("nomad agent log:\n%s", log)
		}
	})
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	a := &nomadAgent{
		addr:         fmt.Sprintf("https://127.0.0.1:%d", httpPort),
		clientIDFile: filepath.Join(dir, "data", "client", "client-id"),
		caFile:       caFile, certFile: certFile, keyFile: keyFile,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
		}},
	}
	var boot struct{ SecretID string }
	waitFor(t, 90*time.Second, "the Nomad ACL bootstrap", func() bool {
		return a.call(t, "", http.MethodPost, "/v1/acl/bootstrap", nil, &boot) == http.StatusOK
	})
	a.mgmt = boot.SecretID
	waitFor(t, 90*time.Second, "the Nomad client node", func() bool {
		id, err := os.ReadFile(a.clientIDFile)
		if err != nil {
			return false
		}
		var node struct{ Status string }
		return a.call(t, a.mgmt, http.MethodGet, "/v1/node/"+string(id), nil, &node) == http.StatusOK && node.Status == "ready"
	})
	return a
}

// token creates a client token with the policy rules given.
func (a *nomadAgent) token(t *testing.T, name, rules string) string {
	t.Helper()
	if c := a.call(t, a.mgmt, http.MethodPost, "/v1/acl/policy/"+name, map[string]string{"Name": name, "Rules": rules}, nil); c != http.StatusOK {
		t.Fatalf("policy %s: HTTP %d", name, c)
	}
	var tok struct{ SecretID string }
	if c := a.call(t, a.mgmt, http.MethodPost, "/v1/acl/token", map[string]any{"Name": name, "Type": "client", "Policies": []string{name}}, &tok); c != http.StatusOK {
		t.Fatalf("token %s: HTTP %d", name, c)
	}
	return tok.SecretID
}

func (a *nomadAgent) nodeID(t *testing.T) string {
	t.Helper()
	id, err := os.ReadFile(a.clientIDFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(id))
}

func (a *nomadAgent) eligibility(t *testing.T) string {
	t.Helper()
	var node struct{ SchedulingEligibility string }
	if c := a.call(t, a.mgmt, http.MethodGet, "/v1/node/"+a.nodeID(t), nil, &node); c != http.StatusOK {
		t.Fatalf("node: HTTP %d", c)
	}
	return node.SchedulingEligibility
}

func (a *nomadAgent) makeEligible(t *testing.T) {
	t.Helper()
	id := a.nodeID(t)
	a.call(t, a.mgmt, http.MethodPost, "/v1/node/"+id+"/drain", map[string]any{"NodeID": id, "DrainSpec": nil, "MarkEligible": true}, nil)
	waitFor(t, 30*time.Second, "the node eligible again", func() bool { return a.eligibility(t) == "eligible" })
}

const (
	group      = "slm-mesh-inference"
	hook       = "slm-drain"
	parameter  = "/slm-mesh/slm-mesh/client/nomad/drain-token"
	instanceID = "i-0123456789abcdef0"
)

// TestDrain runs drain.sh as slm-drain.service does, with a drain.conf in
// the plan module's form, in four situations.
func TestDrain(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED: no %s", tool)
		}
	}
	nomad := nomadtest.Binary(t)
	script, err := filepath.Abs(filepath.Join(root, "terraform", "modules", "plan", "templates", "drain.sh"))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := os.ReadFile(filepath.Join(root, "nomad", "node-drain.policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}

	agent := startNomad(t, nomad)
	drainToken := agent.token(t, "slm-node-drain", string(policy))
	readToken := agent.token(t, "node-read", `node { policy = "read" }`)

	meta := &imds{paths: map[string]string{}}
	srv := httptest.NewServer(meta)
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "aws"), []byte(awsCLI), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(nomad, filepath.Join(bin, "nomad")); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "drain.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`region=eu-west-1
group=%s
hook=%s
token_parameter=%s
deadline=60
spot_deadline=30
imds=%s
interval=1
client_id_file=%s
export NOMAD_ADDR=%s
export NOMAD_CACERT=%s
export NOMAD_CLIENT_CERT=%s
export NOMAD_CLIENT_KEY=%s
`, group, hook, parameter, srv.URL, agent.clientIDFile, agent.addr, agent.caFile, agent.certFile, agent.keyFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	awsLog := filepath.Join(dir, "aws.log")
	tokenFile := filepath.Join(dir, "token")

	// start runs the script with the drain token tok in "SSM".
	start := func(t *testing.T, tok string) (*exec.Cmd, *bytes.Buffer, chan error) {
		t.Helper()
		_ = os.Remove(awsLog)
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd := exec.Command("bash", script)
		cmd.Env = append(os.Environ(), "SLM_DRAIN_CONF="+conf, "PATH="+bin+":"+os.Getenv("PATH"),
			"AWS_LOG="+awsLog, "AWS_TOKEN_FILE="+tokenFile)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
		})
		return cmd, &out, done
	}
	wait := func(t *testing.T, done chan error, out *bytes.Buffer) {
		t.Helper()
		select {
		case err := <-done:
			done <- err // for the cleanup
			if err != nil {
				t.Fatalf("drain.sh: %v\n%s", err, out)
			}
		case <-time.After(3 * time.Minute):
			t.Fatalf("drain.sh did not finish\n%s", out)
		}
	}
	calls := func(t *testing.T) string {
		t.Helper()
		b, err := os.ReadFile(awsLog)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return string(b)
	}
	complete := fmt.Sprintf("autoscaling complete-lifecycle-action --region eu-west-1 --auto-scaling-group-name %s --lifecycle-hook-name %s --instance-id %s --lifecycle-action-result CONTINUE", group, hook, instanceID)
	getToken := "ssm get-parameter --region eu-west-1 --with-decryption --name " + parameter
	meta.set("instance-id", instanceID)

	t.Run("nothing to do while the metadata service answers 404", func(t *testing.T) {
		_, out, done := start(t, drainToken)
		before := meta.pollCount()
		waitFor(t, time.Minute, "three polls of the lifecycle state", func() bool { return meta.pollCount() >= before+3 })
		select {
		case err := <-done:
			done <- err
			t.Fatalf("drain.sh exited (%v) while nothing was terminating\n%s", err, out)
		default:
		}
		if c := calls(t); c != "" {
			t.Errorf("drain.sh called AWS with nothing to do: %s", c)
		}
		if e := agent.eligibility(t); e != "eligible" {
			t.Errorf("node is %s with nothing to do", e)
		}
	})

	t.Run("the group terminates the instance", func(t *testing.T) {
		meta.set("autoscaling/target-lifecycle-state", "Terminated")
		t.Cleanup(func() { meta.set("autoscaling/target-lifecycle-state", ""); agent.makeEligible(t) })
		_, out, done := start(t, drainToken)
		wait(t, done, out)
		if e := agent.eligibility(t); e != "ineligible" {
			t.Errorf("node is %s after the drain\n%s", e, out)
		}
		c := calls(t)
		if !strings.Contains(c, getToken) || !strings.Contains(c, complete) || strings.Index(c, getToken) > strings.Index(c, complete) {
			t.Errorf("AWS calls: want the token read, then %q; got:\n%s", complete, c)
		}
	})

	t.Run("a Spot interruption notice", func(t *testing.T) {
		meta.set("spot/instance-action", `{"action": "terminate", "time": "2026-12-07T10:00:00Z"}`)
		meta.set("autoscaling/target-lifecycle-state", "InService")
		t.Cleanup(func() {
			meta.set("spot/instance-action", "")
			meta.set("autoscaling/target-lifecycle-state", "")
			agent.makeEligible(t)
		})
		_, out, done := start(t, drainToken)
		waitFor(t, 2*time.Minute, "the node drained on the Spot notice", func() bool { return agent.eligibility(t) == "ineligible" })
		// The group has not begun terminating: nothing to complete yet.
		before := meta.pollCount()
		waitFor(t, time.Minute, "two more polls", func() bool { return meta.pollCount() >= before+2 })
		if c := calls(t); strings.Contains(c, "complete-lifecycle-action") {
			t.Errorf("lifecycle action completed before the group terminated the instance:\n%s", c)
		}
		meta.set("autoscaling/target-lifecycle-state", "Terminated")
		wait(t, done, out)
		if c := calls(t); !strings.Contains(c, complete) {
			t.Errorf("AWS calls: want %q; got:\n%s", complete, c)
		}
	})

	t.Run("a token that cannot drain still lets the termination go on", func(t *testing.T) {
		meta.set("autoscaling/target-lifecycle-state", "Terminated")
		t.Cleanup(func() { meta.set("autoscaling/target-lifecycle-state", "") })
		_, out, done := start(t, readToken)
		wait(t, done, out)
		if e := agent.eligibility(t); e != "eligible" {
			t.Errorf("node is %s: a node-read token drained it", e)
		}
		if !strings.Contains(out.String(), "failed; the termination goes on") {
			t.Errorf("drain.sh did not report the failed drain:\n%s", out)
		}
		if c := calls(t); !strings.Contains(c, complete) {
			t.Errorf("AWS calls: want %q; got:\n%s", complete, c)
		}
	})
}

var _ http.Handler = (*imds)(nil)
