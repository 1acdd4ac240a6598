package clusterbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// imdsAddr is the instance metadata service's address on every EC2
// instance.
const imdsAddr = "169.254.169.254"

// IMDS is a stand-in for the EC2 instance metadata service, which cannot
// run here: an HTTP server on 169.254.169.254:80, an address the box adds
// to its bridge, so that every host reaches it through its default route
// as an instance reaches its own. It answers IMDSv2's token request and a
// few metadata paths with made-up values (no credentials: the box's
// agents take theirs from their environment). It exists so that a test
// can show who reaches it and who does not: slm-imds-guard must let root
// and consul through and nobody else.
type IMDS struct {
	srv *http.Server
	ln  net.Listener

	mu   sync.Mutex
	host map[string]map[string]string // host IP → path → what it answers there
}

// StartIMDS starts the stand-in; Close removes it.
func (b *Box) StartIMDS(ctx context.Context) (*IMDS, error) {
	if err := run(ctx, "ip", "addr", "add", imdsAddr+"/32", "dev", bridgeName); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(imdsAddr, "80"))
	if err != nil {
		_ = run(ctx, "ip", "addr", "del", imdsAddr+"/32", "dev", bridgeName)
		return nil, err
	}
	m := &IMDS{ln: ln, host: map[string]map[string]string{}}
	m.srv = &http.Server{Handler: http.HandlerFunc(m.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = m.srv.Serve(ln) }()
	return m, nil
}

// Close stops the stand-in and removes its address.
func (m *IMDS) Close() {
	_ = m.srv.Close()
	_ = run(context.Background(), "ip", "addr", "del", imdsAddr+"/32", "dev", bridgeName)
}

// imdsPaths are the metadata the stand-in serves.
var imdsPaths = map[string]string{
	"/latest/meta-data/":            "instance-id\nlocal-ipv4\n",
	"/latest/meta-data/instance-id": "i-0b0x0000000000000",
	"/latest/meta-data/local-ipv4":  "10.0.0.1",
}

// Set has the stand-in answer value at path (under /latest/meta-data/)
// to host h alone, as one instance's metadata differs from another's: its
// instance id, an Auto Scaling lifecycle state, a Spot notice.
func (m *IMDS) Set(h *Host, path, value string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.host[h.IP] == nil {
		m.host[h.IP] = map[string]string{}
	}
	m.host[h.IP]["/latest/meta-data/"+path] = value
}

// Reset forgets what Set gave host h.
func (m *IMDS) Reset(h *Host) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.host, h.IP)
}

func (m *IMDS) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
		_, _ = w.Write([]byte("box-imds-session-token"))
		return
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	m.mu.Lock()
	body, ok := m.host[ip][r.URL.Path]
	m.mu.Unlock()
	if !ok {
		body, ok = imdsPaths[r.URL.Path]
	}
	if r.Method != http.MethodGet || !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write([]byte(body))
}

// IMDSFrom asks the metadata service for its instance id from host h as
// user ("root" or "nobody", with the agents' environment, as a unit of h
// would): nil when it answered.
func (b *Box) IMDSFrom(ctx context.Context, h *Host, user string) error {
	if err := b.loadAccounts(); err != nil {
		return err
	}
	uid, gid, err := b.accounts.ids(user, "")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var out bytes.Buffer
	err = b.runInHost(ctx, h, uid, gid, []string{
		"curl", "-sS", "--fail", "--noproxy", "*", "--max-time", "4",
		"http://" + imdsAddr + "/latest/meta-data/instance-id",
	}, &out)
	if err != nil {
		return fmt.Errorf("%s as %s: %w: %s", h.Name, user, err, bytes.TrimSpace(out.Bytes()))
	}
	if out.String() != imdsPaths["/latest/meta-data/instance-id"] {
		return errors.New(h.Name + ": the metadata service answered " + out.String())
	}
	return nil
}
