// Package clusterbox runs the production cluster on one machine: a
// "cluster in a box".
//
// Each host of the cluster is a network namespace on a bridge the box
// creates (10.213.7.0/24 by default; the bridge has .1), with mount and UTS
// namespaces of its own: inside, the host has its own name and its own
// /etc/consul.d, /etc/nomad.d, /opt/slm-data, /opt/nomad, /opt/consul,
// /opt/slm-mesh and /var/lib/slm-mesh (bind mounts of directories under
// the box's state directory), so the absolute paths of the rendered files
// work unchanged. Three hosts are servers; the others are Nomad clients of
// the kinds the Terraform plan module knows (gateway, caller, inference).
//
// What runs on the hosts is the configuration terraform/modules/plan
// renders, applied with OpenTofu: the agent configurations, the systemd
// units and the scripts of each kind of node. The box starts the units as
// systemd would (there is no systemd here), runs the rendered secrets.sh,
// imds-guard.sh, cpu-meta.sh and acl-bootstrap.sh, and starts Consul and
// Nomad as the units say. The secrets (a test CA and the agents'
// certificates, gossip keys, ACL tokens) are made here and stored in SSM
// of moto_server, an AWS API emulator on the bridge, where secrets.sh and
// acl-bootstrap.sh read them with the aws CLI; the servers are EC2
// instances there, which cloud auto-join finds by their tag.
//
// The differences from a cluster on AWS are few and listed in
// tools/box/README.md: the emulator for AWS, one file
// per Nomad client (cgroup_parent, alloc_dir), no systemd, no package
// installation.
//
// Up brings the box up and leaves it running (its processes outlive the
// program that started them); Down removes everything it made, from the
// state file in the box's directory, so `go run ./tools/box down` can
// clean up after `up` or after an interrupted run.
package clusterbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Config describes a box. Zero values take the defaults given.
type Config struct {
	// Root is the repository (its terraform/modules/plan is applied).
	Root string
	// Dir holds the box's state, hosts' files and logs; default
	// Root/.cache/box. It must be on the same file system as /usr (see
	// clientOverlay).
	Dir string
	// Subnet is the bridge's IPv4 /24; default 10.213.7.0/24.
	Subnet string
	// Counts is the number of hosts of each kind (server, gateway, caller,
	// inference); default DefaultCounts.
	Counts map[string]int
	// ConsulBin and NomadBin are the built agents; default
	// Root/.cache/bin/{consul,nomad}. TofuBin applies the plan module;
	// default Root/.cache/bin/tofu (tools/iac/check.sh builds it), else
	// tofu or terraform on PATH.
	ConsulBin, NomadBin, TofuBin string
	// Region is the AWS region the plan renders; default eu-west-1.
	Region string
	// Log receives progress lines; nil: none.
	Log io.Writer
}

// DefaultCounts are the box's hosts: 3 servers (a quorum that survives one
// loss); 3 gateway hosts, because the gateway listens on a static port, so
// two gateways need two hosts and a canary of either needs a third; 2
// caller hosts and 2 inference hosts, so that losing one host of a tier
// leaves the other serving, and each tier's two instances and a canary fit
// (the callers and the inference share their hosts' CPU by MHz).
var DefaultCounts = map[string]int{"server": 3, "gateway": 3, "caller": 2, "inference": 2}

// The box's fixed names.
const (
	clusterName = "slm-box"
	datacenter  = "dc1"
	nomadRegion = "global"
	// bucket holds the releases and the model, as the artifacts bucket
	// does on AWS.
	bucket = "slm-box-artifacts"
)

func (c *Config) setDefaults() error {
	if c.Root == "" {
		return errors.New("clusterbox: Root is required")
	}
	if c.Dir == "" {
		c.Dir = filepath.Join(c.Root, ".cache", "box")
	}
	if c.Subnet == "" {
		c.Subnet = "10.213.7.0/24"
	}
	if c.Counts == nil {
		c.Counts = maps.Clone(DefaultCounts)
	}
	for kind, n := range c.Counts {
		if !isKind(kind) || n < 0 {
			return fmt.Errorf("clusterbox: bad count %s=%d", kind, n)
		}
	}
	if c.Counts["server"] != 1 && c.Counts["server"] != 3 && c.Counts["server"] != 5 {
		return fmt.Errorf("clusterbox: %d servers: want 1, 3 or 5", c.Counts["server"])
	}
	bin := filepath.Join(c.Root, ".cache", "bin")
	if c.ConsulBin == "" {
		c.ConsulBin = filepath.Join(bin, "consul")
	}
	if c.NomadBin == "" {
		c.NomadBin = filepath.Join(bin, "nomad")
	}
	if c.TofuBin == "" {
		c.TofuBin = findTofu(bin)
	}
	if c.Region == "" {
		c.Region = "eu-west-1"
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	_, n, err := net.ParseCIDR(c.Subnet)
	if err != nil || n.IP.To4() == nil {
		return fmt.Errorf("clusterbox: subnet %q: want an IPv4 CIDR", c.Subnet)
	}
	if ones, _ := n.Mask.Size(); ones != 24 {
		return fmt.Errorf("clusterbox: subnet %q: want a /24", c.Subnet)
	}
	return nil
}

// findTofu is OpenTofu as tools/iac builds it, else tofu or terraform
// from PATH (the plan module needs no provider, so either applies it).
func findTofu(bin string) string {
	built := filepath.Join(bin, "tofu")
	if _, err := os.Stat(built); err == nil {
		return built
	}
	for _, name := range []string{"tofu", "terraform"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return built
}

// ErrMissing: something the box needs is not on this machine. The e2e test
// skips on it (fails under CI).
var ErrMissing = errors.New("clusterbox: missing prerequisite")

// Check reports what the box needs and the machine lacks: root, the
// commands it runs, the built agents and OpenTofu, the emulator and the
// aws CLI.
func (c Config) Check() error {
	if err := c.setDefaults(); err != nil {
		return err
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces and mounts)")
	}
	for _, cmd := range []string{"ip", "nsenter", "unshare", "mountpoint", "iptables", "jq", "curl", "moto_server"} {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, cmd)
		}
	}
	if _, err := findRealAWS(); err != nil {
		missing = append(missing, "aws (the aws CLI: apt-get install awscli)")
	}
	for _, f := range []struct{ path, how string }{
		{c.ConsulBin, "tools/consul/build.sh"},
		{c.NomadBin, "tools/nomad/build.sh"},
		{c.TofuBin, "tools/iac/check.sh builds OpenTofu; terraform on PATH does too"},
		{"/etc/ssl/certs/ca-certificates.crt", "apt-get install ca-certificates"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			missing = append(missing, f.path+" ("+f.how+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %v", ErrMissing, missing)
	}
	return nil
}

// State is what Down and Status need of a running box, kept in
// Dir/state.json (mode 0600: it holds the management tokens).
type State struct {
	Subnet  string  `json:"subnet"`
	Hosts   []*Host `json:"hosts"`
	Procs   []Proc  `json:"procs"`
	MotoPid int     `json:"moto_pid"`
	// CreatedTargets are mount targets the box created on the machine.
	CreatedTargets []string `json:"created_targets,omitempty"`
	// Endpoint is the AWS API emulator's URL.
	Endpoint string `json:"endpoint"`
	// NomadManagement and OperatorToken are Nomad ACL tokens: the
	// bootstrap (management) token and the operator's, which may submit
	// the jobs and nothing more.
	NomadManagement string `json:"nomad_management"`
	OperatorToken   string `json:"operator_token,omitempty"`
	APIKey          string `json:"api_key"`
}

// Box is a cluster in a box.
type Box struct {
	cfg      Config
	accounts accounts
	secrets  *Secrets
	plan     *Plan
	emulator *emulator
	caPEM    string // the agents' CA
	emuCA    *CA    // the emulator's CA

	mu    sync.Mutex
	state State
}

func (b *Box) logf(format string, args ...any) {
	fmt.Fprintf(b.cfg.Log, "box: "+format+"\n", args...)
}

func (b *Box) statePath() string { return filepath.Join(b.cfg.Dir, "state.json") }
func (b *Box) binDir() string    { return filepath.Join(b.cfg.Dir, "bin") }

// saveState writes the state file.
func (b *Box) saveState() error {
	b.mu.Lock()
	data, err := json.MarshalIndent(b.state, "", "  ")
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return os.WriteFile(b.statePath(), data, 0o600)
}

// Open reads the state of the box in cfg.Dir, for Down and Status.
func Open(cfg Config) (*Box, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	b := &Box{cfg: cfg}
	data, err := os.ReadFile(b.statePath())
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &b.state); err != nil {
		return nil, fmt.Errorf("%s: %w", b.statePath(), err)
	}
	return b, nil
}

// Hosts are the box's hosts.
func (b *Box) Hosts() []*Host { return b.state.Hosts }

// HostsOf are the hosts of one kind.
func (b *Box) HostsOf(kind string) []*Host {
	var out []*Host
	for _, h := range b.state.Hosts {
		if h.Kind == kind {
			out = append(out, h)
		}
	}
	return out
}

// Dir is the box's state directory.
func (b *Box) Dir() string { return b.cfg.Dir }

// subnetAddr is the address .n of the box's subnet.
func (b *Box) subnetAddr(n int) string {
	ip, _, _ := net.ParseCIDR(b.cfg.Subnet)
	ip = ip.To4()
	return net.IPv4(ip[0], ip[1], ip[2], byte(n)).String()
}

// gateway is the bridge's address.
func (b *Box) gateway() string { return b.subnetAddr(1) }

// hostAddr numbers hosts by kind: servers .11-, gateways .21-, callers
// .31-, inference .41-.
func (b *Box) hostAddr(kind string, i int) string {
	base := map[string]int{"server": 10, "gateway": 20, "caller": 30, "inference": 40}[kind]
	return b.subnetAddr(base + i)
}

// Up brings the box up: network, emulator, rendered files, agents, and
// waits until Nomad has a leader, ACLs are bootstrapped and every client is
// ready; then it creates the operator's ACL token. On failure the box is
// left as it is for inspection (logs under Dir/hosts); Down removes it.
func Up(ctx context.Context, cfg Config) (*Box, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	b := &Box{cfg: cfg}
	if _, err := os.Stat(b.statePath()); err == nil {
		return nil, fmt.Errorf("a box's state is in %s: run `go run ./tools/box down` first", b.statePath())
	}
	if err := removeStale(ctx); err != nil {
		return nil, err
	}
	// What an earlier box left (its logs, Raft data, allocations) goes:
	// every box starts as new machines do.
	for _, d := range []string{"hosts", "plan", "etc", "bin"} {
		if err := os.RemoveAll(filepath.Join(cfg.Dir, d)); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	b.state.Subnet = cfg.Subnet
	start := time.Now()
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"secrets", b.makeSecrets},
		{"network", b.makeNetwork},
		{"emulator", b.startEmulator},
		{"plan", b.applyPlan},
		{"aws", b.seedEmulator},
		{"hosts", b.makeHosts},
		{"agents", b.startAgents},
		{"cluster", b.waitCluster},
		{"operator token", b.makeOperatorToken},
	}
	for _, s := range steps {
		t := time.Now()
		if err := s.fn(ctx); err != nil {
			_ = b.saveState()
			return b, fmt.Errorf("clusterbox: %s: %w", s.name, err)
		}
		if err := b.saveState(); err != nil {
			return b, err
		}
		b.logf("%s: done in %s", s.name, time.Since(t).Round(100*time.Millisecond))
	}
	b.logf("up in %s: %d hosts, Nomad at %s", time.Since(start).Round(time.Second), len(b.state.Hosts), b.NomadAddr())
	return b, nil
}

// makeSecrets makes the CAs, the agents' certificates, the other secrets
// and the accounts files.
func (b *Box) makeSecrets(context.Context) error {
	ca, err := newCA(clusterName + " agent CA")
	if err != nil {
		return err
	}
	b.caPEM = ca.CertPEM
	if b.secrets, err = newSecrets(ca, nomadRegion, datacenter); err != nil {
		return err
	}
	b.state.NomadManagement = b.secrets.NomadManagement
	b.state.APIKey = b.secrets.APIKeys[0]
	if b.emuCA, err = newCA(clusterName + " AWS emulator CA"); err != nil {
		return err
	}
	etc := filepath.Join(b.cfg.Dir, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(etc, "agent-ca.pem"), ca.CertPEM, 0o644, 0, 0); err != nil {
		return err
	}
	// The operator's certificate, as terraform/aws's: Nomad's API asks
	// every caller for one of the agents' CA (verify_https_client).
	cert, key, err := ca.issue(clientOnly, []string{"operator"}, nil)
	if err != nil {
		return err
	}
	if err := writeFile(b.OperatorCertFile(), cert, 0o644, 0, 0); err != nil {
		return err
	}
	if err := writeFile(b.OperatorKeyFile(), key, 0o600, 0, 0); err != nil {
		return err
	}
	b.accounts, err = hostAccounts(filepath.Join(etc, "passwd"), filepath.Join(etc, "group"))
	return err
}

// makeNetwork creates the bridge and the private directory that keeps the
// hosts' namespaces.
func (b *Box) makeNetwork(ctx context.Context) error {
	if err := preparePrivateDir(ctx); err != nil {
		return err
	}
	return createBridge(ctx, b.gateway()+"/24")
}

// startEmulator starts moto_server on the bridge with a certificate for
// the bridge's address, and writes the hosts' CA bundle and the aws
// wrapper.
func (b *Box) startEmulator(ctx context.Context) error {
	etc := filepath.Join(b.cfg.Dir, "etc")
	cert, key, err := b.emuCA.issue(serverAndClient, []string{"aws-emulator"}, []net.IP{net.ParseIP(b.gateway())})
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(etc, "emulator.pem"), filepath.Join(etc, "emulator-key.pem")
	if err := writeFile(certFile, cert, 0o644, 0, 0); err != nil {
		return err
	}
	if err := writeFile(keyFile, key, 0o600, 0, 0); err != nil {
		return err
	}
	bundle, err := caBundle("/etc/ssl/certs/ca-certificates.crt", b.emuCA.CertPEM)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(etc, "ca-certificates.crt"), bundle, 0o644, 0, 0); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(etc, "emulator-ca.pem"), b.emuCA.CertPEM, 0o644, 0, 0); err != nil {
		return err
	}
	motoBin, _ := exec.LookPath("moto_server")
	client := trustingClient(b.emuCA.CertPEM)
	proc, err := startMoto(ctx, motoBin, b.gateway(), certFile, keyFile, filepath.Join(b.cfg.Dir, "moto.log"), client)
	if err != nil {
		return err
	}
	b.state.MotoPid = proc.Pid
	b.state.Endpoint = "https://" + net.JoinHostPort(b.gateway(), strconv.Itoa(motoPort))
	b.emulator = &emulator{endpoint: b.state.Endpoint, region: b.cfg.Region, client: client}
	realAWS, err := findRealAWS()
	if err != nil {
		return err
	}
	consul, err := b.agentCopy(b.cfg.ConsulBin)
	if err != nil {
		return err
	}
	return boxBin(b.binDir(), consul, b.cfg.NomadBin, awsWrapper(realAWS, b.state.Endpoint, b.autoScalingEndpoint(), filepath.Join(etc, "ca-certificates.crt")))
}

// agentBinDir holds the agents' copies (agentCopy).
const agentBinDir = "/run/slmbox-bin"

// agentCopy places a copy of the consul binary where its User= can run it
// (the checkout may be in a directory only root can enter).
func (b *Box) agentCopy(bin string) (string, error) {
	dir := agentBinDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, filepath.Base(bin))
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	return dst, os.WriteFile(dst, data, 0o755)
}

// applyPlan renders the cluster's files with terraform/modules/plan.
func (b *Box) applyPlan(ctx context.Context) error {
	in := PlanInput{
		ClusterName:     clusterName,
		Region:          b.cfg.Region,
		ArtifactsBucket: bucket,
		EC2Endpoint:     b.state.Endpoint,
		Secrets:         b.secrets,
	}
	p, err := applyPlan(ctx, b.cfg.TofuBin, filepath.Join(b.cfg.Root, "terraform", "modules", "plan"), filepath.Join(b.cfg.Dir, "plan"), in)
	if err != nil {
		return err
	}
	b.plan = p
	return nil
}

// seedEmulator does in the emulator what terraform/aws does on AWS for the
// nodes: the secrets in SSM, the servers as tagged EC2 instances, the
// artifacts bucket, and the model where the inference job downloads it.
func (b *Box) seedEmulator(ctx context.Context) error {
	for name, value := range b.plan.SSMParameters {
		if err := b.emulator.putParameter(ctx, b.plan.SSMPrefix+"/"+name, value); err != nil {
			return err
		}
	}
	var servers []string
	for i := 1; i <= b.cfg.Counts["server"]; i++ {
		servers = append(servers, b.hostAddr("server", i))
	}
	if err := b.emulator.serverInstances(ctx, b.subnetAddr(0)+"/24", b.subnetAddr(0)+"/24", b.plan.JoinTag.Key, b.plan.JoinTag.Value, servers); err != nil {
		return err
	}
	return b.emulator.createBucket(ctx, bucket)
}

// makeHosts creates every host: its network, its files and its
// namespaces.
func (b *Box) makeHosts(ctx context.Context) error {
	if !sameFileSystem("/usr", filepath.Dir(allocRoot)) {
		b.logf("warning: %s is not on the file system of /usr: every exec task's chroot will be a copy of /usr, not hard links", allocRoot)
	}
	names, kinds := hostNames(b.cfg.Counts)
	count := map[string]int{}
	etc := filepath.Join(b.cfg.Dir, "etc")
	for i, name := range names {
		kind := kinds[i]
		count[kind]++
		h := &Host{
			Name: name, Kind: kind, IP: b.hostAddr(kind, count[kind]),
			Netns: netnsPrefix + name, Veth: vethPrefix + string(kind[0]) + strconv.Itoa(count[kind]),
			MountNS: filepath.Join(nsDir, name+".mnt"), UTSNS: filepath.Join(nsDir, name+".uts"),
			Root: filepath.Join(b.cfg.Dir, "hosts", name),
		}
		overlay := ""
		if kind != "server" {
			h.CgroupParent = "/slmbox-" + name
			overlay = h.clientOverlay()
		}
		b.state.Hosts = append(b.state.Hosts, h)
		if err := h.layOut(b.plan.NodeFiles[kind], b.accounts, overlay); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := createHostNetwork(ctx, h, 24, b.gateway()); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		mounts := []Mount{
			{filepath.Join(etc, "passwd"), "/etc/passwd"},
			{filepath.Join(etc, "group"), "/etc/group"},
			{filepath.Join(etc, "ca-certificates.crt"), "/etc/ssl/certs/ca-certificates.crt"},
		}
		for _, d := range hostDirs {
			mounts = append(mounts, Mount{h.Path(d), d})
		}
		if err := createHostNamespaces(ctx, h, mounts); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		b.state.CreatedTargets = append(b.state.CreatedTargets, h.CreatedTargets...)
		h.CreatedTargets = nil
	}
	return nil
}

// startAgents starts every host's boot units, all hosts at once.
func (b *Box) startAgents(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(b.state.Hosts))
	for i, h := range b.state.Hosts {
		files := map[string]string{}
		for _, f := range b.plan.NodeFiles[h.Kind] {
			files[f.Path] = f.Content
		}
		units, err := bootUnits(files)
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.startUnits(ctx, h, units)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sameFileSystem says whether two paths are on the same device.
func sameFileSystem(a, b string) bool {
	var sa, sb syscall.Stat_t
	return syscall.Stat(a, &sa) == nil && syscall.Stat(b, &sb) == nil && sa.Dev == sb.Dev
}

// Poll calls f every second until it succeeds, ctx ends or timeout passes;
// the drills wait with it too.
func Poll(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// httpGetOK is a GET that must answer 2xx.
func httpGetOK(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
