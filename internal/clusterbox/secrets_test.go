package clusterbox

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"regexp"
	"testing"
)

// The secrets must pass the plan module's validation of its secrets
// variable and give the agents certificates with the names they check.
func TestNewSecrets(t *testing.T) {
	t.Parallel()
	ca, err := newCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSecrets(ca, "global", "dc1")
	if err != nil {
		t.Fatal(err)
	}
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	for name, tok := range map[string]string{"consul_management": s.ConsulManagement, "consul_agent": s.ConsulAgent,
		"consul_default": s.ConsulDefault, "consul_nomad": s.ConsulNomad, "nomad_management": s.NomadManagement} {
		if !uuid.MatchString(tok) {
			t.Errorf("%s %q is not a lowercase UUID", name, tok)
		}
	}
	for _, tok := range []string{s.CallerToken, s.InferenceToken} {
		if !regexp.MustCompile(`^[A-Za-z0-9]{32,}$`).MatchString(tok) {
			t.Errorf("rpc token %q", tok)
		}
	}
	if s.CallerToken == s.InferenceToken {
		t.Error("one token for both hops")
	}
	for _, k := range []string{s.ConsulGossipKey, s.NomadGossipKey} {
		if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) != 32 {
			t.Errorf("gossip key %q: %d bytes, %v", k, len(b), err)
		}
	}
	if len(s.APIKeys) == 0 || !regexp.MustCompile(`^[A-Za-z0-9_-]{32,}$`).MatchString(s.APIKeys[0]) {
		t.Errorf("api keys %q", s.APIKeys)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(s.TLS.CACert))
	for _, c := range []struct {
		cert, key string
		names     []string
	}{
		{s.TLS.NomadServerCert, s.TLS.NomadServerKey, []string{"server.global.nomad", "localhost", "127.0.0.1"}},
		{s.TLS.NomadClientCert, s.TLS.NomadClientKey, []string{"client.global.nomad", "localhost"}},
		{s.TLS.ConsulServerCert, s.TLS.ConsulServerKey, []string{"server.dc1.consul", "localhost"}},
		{s.TLS.ConsulClientCert, s.TLS.ConsulClientKey, []string{"client.dc1.consul"}},
	} {
		pair, err := tls.X509KeyPair([]byte(c.cert), []byte(c.key))
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range c.names {
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
			if err != nil {
				t.Errorf("certificate %s for %s: %v", leaf.Subject.CommonName, name, err)
			}
		}
	}

	// The tiers' RPC certificates: each names its tier under the RPC CA,
	// and none is one the agents' CA vouches for (a task holds its key).
	rpcRoots := x509.NewCertPool()
	rpcRoots.AppendCertsFromPEM([]byte(s.TLS.RPCCACert))
	for name, c := range map[string][2]string{
		"slm-caller":    {s.TLS.RPCCallerCert, s.TLS.RPCCallerKey},
		"slm-inference": {s.TLS.RPCInferenceCert, s.TLS.RPCInferenceKey},
	} {
		pair, err := tls.X509KeyPair([]byte(c[0]), []byte(c[1]))
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: rpcRoots}); err != nil {
			t.Errorf("RPC certificate for %s: %v", name, err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			t.Errorf("the agents' CA vouches for %s's RPC certificate", name)
		}
	}
}
