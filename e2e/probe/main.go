// Command probe is what a compromised task would try on a Nomad client of
// the cluster, run as a task by the cluster-in-a-box security test
// (e2e/cluster_security_test.go) with the production jobs' settings. It
// makes each attempt and prints one JSON line per attempt:
//
//	{"attempt":"imds","reached":false,"detail":"..."}
//
// "reached" means the attack got what it wanted; the test fails on any.
// It always exits 0: a probe that crashed would hide what it did not try.
//
// Usage: probe -nomad https://10.0.0.11:4646 -consul http://127.0.0.1:8500
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type result struct {
	Attempt string `json:"attempt"`
	Reached bool   `json:"reached"`
	Detail  string `json:"detail"`
}

func main() {
	var nomadAddrs, consulAddrs list
	flag.Var(&nomadAddrs, "nomad", "a Nomad HTTP API address to try (repeatable)")
	flag.Var(&consulAddrs, "consul", "a Consul HTTP API address to try (repeatable)")
	imds := flag.String("imds", "http://169.254.169.254", "the instance metadata service")
	flag.Parse()

	out := json.NewEncoder(os.Stdout)
	report := func(attempt string, reached bool, format string, args ...any) {
		_ = out.Encode(result{Attempt: attempt, Reached: reached, Detail: fmt.Sprintf(format, args...)})
	}

	caps := capabilities()
	report("capabilities", caps.any(), "%s", caps)

	// An attacker who can become root does so first: every attempt below
	// then runs with the most the task can get.
	if err := syscall.Setuid(0); err != nil {
		report("setuid(0)", false, "%v", err)
	} else {
		report("setuid(0)", true, "now uid %d", os.Getuid())
	}
	report("identity", false, "uid %d euid %d gid %d", os.Getuid(), os.Geteuid(), os.Getgid())

	files := privilegedFiles("/")
	report("setuid programs in the chroot", len(files) > 0, "%d: %s", len(files), first(files))

	for _, dir := range []string{
		"/etc/nomad.d", "/etc/consul.d", "/etc/slm-mesh", "/opt/nomad", "/opt/consul",
		"/opt/slm-data", "/var/lib/slm-mesh", "/root", "/etc/shadow",
	} {
		read, seen := readable(dir)
		report("read "+dir, len(read) > 0, "%d files present, %d readable: %s", seen, len(read), first(read))
	}

	reached, detail := imdsAttempt(*imds)
	report("instance metadata", reached, "%s", detail)

	// An attacker skips certificate checks; no proxy from the
	// environment stands between the task and what it tries.
	insecure := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	// Without a token, as the task has none: a list that comes back
	// empty (what the anonymous policy may see) gives nothing away.
	// The API asks a certificate of the agents' CA (verify_https_client):
	// without one no request gets an HTTP answer, whatever its token.
	for _, addr := range nomadAddrs {
		code, detail := get(insecure, addr+"/v1/status/leader")
		report("nomad "+addr+" without a client certificate", code != 0, "%s", detail)
		for _, path := range []string{"/v1/jobs", "/v1/vars?prefix=", "/v1/var/nomad/jobs", "/v1/acl/tokens", "/v1/nodes"} {
			reached, detail := apiAttempt(insecure, addr+path)
			report("nomad "+addr+path, reached, "%s", detail)
		}
	}
	for _, addr := range consulAddrs {
		for _, path := range []string{"/v1/kv/?recurse", "/v1/acl/tokens", "/v1/agent/self"} {
			reached, detail := apiAttempt(insecure, addr+path)
			report("consul "+addr+path, reached, "%s", detail)
		}
	}

	// The most a task can be given: its workload identity (identity {
	// env = true }) and Nomad's Task API socket, which needs no client
	// certificate. The identity reads its own job's variable (the
	// control) and no other job's.
	tokens := []string{""}
	if tok := os.Getenv("NOMAD_TOKEN"); tok != "" {
		tokens = append(tokens, tok)
		taskAPI := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(os.Getenv("NOMAD_SECRETS_DIR"), "api.sock"))
			},
		}}
		withToken := func(path string) (int, string, []byte) { return fetch(taskAPI, "http://task-api"+path, tok) }
		code, detail, _ := withToken("/v1/var/nomad/jobs/" + os.Getenv("NOMAD_JOB_ID"))
		report("control: the task API reads the task's own job's variable", code == http.StatusOK, "%s", detail)
		for _, path := range []string{
			"/v1/var/nomad/jobs/slm-gateway", "/v1/var/nomad/jobs/slm-caller", "/v1/var/nomad/jobs/slm-inference",
			"/v1/var/nomad/jobs", "/v1/jobs", "/v1/acl/tokens",
		} {
			code, detail, body := withToken(path)
			report("task API with the workload identity "+path, code/100 == 2 && !strings.HasSuffix(detail, ` "[]"`), "%s", detail)
			if code == http.StatusOK && strings.HasPrefix(path, "/v1/var/") {
				tokens = append(tokens, variableItems(body)...) // tried on the RPC below
			}
		}
	} else {
		report("control: the task API reads the task's own job's variable", false, "no NOMAD_TOKEN: the task was given no workload identity")
	}

	// The services' RPC, found as the services find it (the node's Consul
	// agent answers catalog reads), opened with every token the task
	// holds or read above: none of them may be a tier's RPC token.
	for _, consul := range consulAddrs {
		for _, svc := range []string{"slm-caller", "slm-inference"} {
			addrs, detail := catalog(insecure, consul, svc)
			report("control: "+svc+" found in Consul", len(addrs) > 0, "%s", detail)
			for _, addr := range addrs {
				for i, tok := range tokens {
					reached, detail := rpcAttempt(addr, tok)
					report(fmt.Sprintf("%s RPC at %s with token %d of %d", svc, addr, i, len(tokens)), reached, "%s", detail)
				}
			}
		}
	}
}

// variableItems is every item value of a Nomad Variable's JSON.
func variableItems(body []byte) []string {
	var v struct{ Items map[string]string }
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	var values []string
	for _, value := range v.Items {
		values = append(values, value)
	}
	return values
}

// catalog is the addresses of a service's instances in Consul's catalog.
func catalog(c *http.Client, consul, service string) ([]string, string) {
	resp, err := c.Get(consul + "/v1/catalog/service/" + service)
	if err != nil {
		return nil, err.Error()
	}
	defer resp.Body.Close()
	var entries []struct {
		Address        string
		ServiceAddress string
		ServicePort    int
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&entries); err != nil {
		return nil, fmt.Sprintf("%s: %v", resp.Status, err)
	}
	var addrs []string
	for _, e := range entries {
		host := e.ServiceAddress
		if host == "" {
			host = e.Address
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(e.ServicePort)))
	}
	return addrs, fmt.Sprintf("%s: %v", resp.Status, addrs)
}

// rpcAttempt opens a service's WebSocket RPC (GET /rpc with an upgrade)
// with tok as its bearer token, "" for none, over TLS (any certificate
// accepted, as an attacker does) and in clear: an upgrade accepted (101) is
// a way around the gateway's API keys and limits.
func rpcAttempt(addr, tok string) (bool, string) {
	var details []string
	for _, scheme := range []string{"https", "http"} {
		reached, detail := upgrade(scheme+"://"+addr+"/rpc", tok)
		if reached {
			return true, detail
		}
		details = append(details, detail)
	}
	return false, strings.Join(details, "; ")
}

func upgrade(url, tok string) (bool, string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "c2xtLW1lc2gtcHJvYmUtMQ==")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	resp, err := c.Do(req)
	if err != nil {
		return false, "GET " + url + ": " + err.Error()
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusSwitchingProtocols, "GET " + url + ": " + resp.Status
}

// first is up to ten of paths, for a report line of bounded length.
func first(paths []string) string {
	if len(paths) > 10 {
		return strings.Join(paths[:10], " ") + " ..."
	}
	return strings.Join(paths, " ")
}

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// capSets are the task's capability sets from /proc/self/status.
type capSets map[string]uint64

func capabilities() capSets {
	caps := capSets{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		caps["unreadable"] = 1
		return caps
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		name, value, ok := strings.Cut(s.Text(), ":\t")
		if !ok || !strings.HasPrefix(name, "Cap") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
		if err != nil {
			v = 1
		}
		caps[name] = v
	}
	return caps
}

// any: the task holds a capability, or could gain one by executing a
// program (the bounding set).
func (c capSets) any() bool {
	for _, v := range c {
		if v != 0 {
			return true
		}
	}
	return len(c) == 0
}

func (c capSets) String() string {
	var b strings.Builder
	for _, name := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "unreadable"} {
		if v, ok := c[name]; ok {
			fmt.Fprintf(&b, "%s=%016x ", name, v)
		}
	}
	return strings.TrimSpace(b.String())
}

// privilegedFiles are the files under root that raise privileges when
// executed: setuid to anyone, or setgid to root's group.
func privilegedFiles(root string) []string {
	var found []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (path == "/proc" || path == "/sys" || path == "/dev") {
			return fs.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		if info.Mode()&fs.ModeSetuid != 0 || (info.Mode()&fs.ModeSetgid != 0 && st != nil && st.Gid == 0) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// readable walks path and returns the regular files whose first byte it
// could read, and how many files it saw.
func readable(path string) (read []string, seen int) {
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		seen++
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		var b [1]byte
		if n, _ := f.Read(b[:]); n == 1 {
			read = append(read, p)
		}
		return nil
	})
	return read, seen
}

// imdsAttempt asks the instance metadata service for a session token
// (IMDSv2) and then for the metadata itself (IMDSv1 too); any answer at
// all means the task reached it.
func imdsAttempt(base string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := c.Do(req)
	if err == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		resp.Body.Close()
		return true, fmt.Sprintf("PUT /latest/api/token: %s %q", resp.Status, body)
	}
	notes := []string{"token: " + err.Error()}
	code, detail := get(c, base+"/latest/meta-data/")
	if code != 0 {
		return true, detail
	}
	notes = append(notes, detail)
	return false, strings.Join(notes, "; ")
}

// apiAttempt is a GET that reaches what it asks for when it answers 2xx
// with something in it.
func apiAttempt(c *http.Client, url string) (bool, string) {
	code, detail := get(c, url)
	empty := strings.HasSuffix(detail, ` "[]"`) || strings.HasSuffix(detail, ` "{}"`) || strings.HasSuffix(detail, ` ""`)
	return code/100 == 2 && !empty, detail
}

// get is a GET; code is 0 when no HTTP response came.
func get(c *http.Client, url string) (int, string) {
	code, detail, _ := fetch(c, url, "")
	return code, detail
}

// fetch is a GET with a Nomad token ("" for none): the status code (0
// when no HTTP response came), a one-line detail with the body's start,
// and the body (up to 1 MiB).
func fetch(c *http.Client, url, token string) (int, string, []byte) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error(), nil
	}
	if token != "" {
		req.Header.Set("X-Nomad-Token", token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "GET " + url + ": " + err.Error(), nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, fmt.Sprintf("GET %s: %s %q", url, resp.Status, body[:min(len(body), 200)]), body
}
