package clusterbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Secrets is the plan module's `secrets` variable: what terraform/aws makes
// with the random and tls providers, made here with Go's crypto instead
// (those providers cannot be installed here). The JSON names are the
// variable's attribute names.
type Secrets struct {
	ConsulGossipKey  string     `json:"consul_gossip_key"`
	NomadGossipKey   string     `json:"nomad_gossip_key"`
	ConsulManagement string     `json:"consul_management"`
	ConsulAgent      string     `json:"consul_agent"`
	ConsulDefault    string     `json:"consul_default"`
	ConsulNomad      string     `json:"consul_nomad"`
	NomadManagement  string     `json:"nomad_management"`
	CallerToken      string     `json:"caller_token"`
	InferenceToken   string     `json:"inference_token"`
	APIKeys          []string   `json:"api_keys"`
	TLS              SecretsTLS `json:"tls"`
}

// SecretsTLS holds the agents' CA certificate and each kind's certificate
// and key, PEM-encoded.
type SecretsTLS struct {
	CACert           string `json:"ca_cert"`
	NomadServerCert  string `json:"nomad_server_cert"`
	NomadServerKey   string `json:"nomad_server_key"`
	NomadClientCert  string `json:"nomad_client_cert"`
	NomadClientKey   string `json:"nomad_client_key"`
	ConsulServerCert string `json:"consul_server_cert"`
	ConsulServerKey  string `json:"consul_server_key"`
	ConsulClientCert string `json:"consul_client_cert"`
	ConsulClientKey  string `json:"consul_client_key"`

	// RPC between tiers: a CA of its own and a certificate per private
	// tier, named after its Consul service.
	RPCCACert        string `json:"rpc_ca_cert"`
	RPCCallerCert    string `json:"rpc_caller_cert"`
	RPCCallerKey     string `json:"rpc_caller_key"`
	RPCInferenceCert string `json:"rpc_inference_cert"`
	RPCInferenceKey  string `json:"rpc_inference_key"`
}

// CA is a certificate authority that signs the box's certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM string
}

// newCA makes a self-signed ECDSA P-256 CA, as terraform/aws's agent CA.
func newCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"slm-mesh"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Certificate uses: an agent's certificate serves and calls (mutual TLS
// both ways); an operator's only calls.
var (
	serverAndClient = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	clientOnly      = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	serverOnly      = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
)

// issue signs a certificate for the uses, DNS names and IP addresses
// given; the first name is the common name. It returns the certificate and
// its key in PEM.
func (ca *CA) issue(uses []x509.ExtKeyUsage, names []string, ips []net.IP) (certPEM, keyPEM string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  uses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

// newSecrets makes every secret of the cluster. The agent certificates
// carry the names terraform/aws gives them (Nomad checks
// server.<region>.nomad and client.<region>.nomad, Consul
// server.<datacenter>.consul), plus localhost and 127.0.0.1.
func newSecrets(ca *CA, region, datacenter string) (*Secrets, error) {
	s := &Secrets{
		ConsulGossipKey:  gossipKey(),
		NomadGossipKey:   gossipKey(),
		ConsulManagement: uuid(),
		ConsulAgent:      uuid(),
		ConsulDefault:    uuid(),
		ConsulNomad:      uuid(),
		NomadManagement:  uuid(),
		CallerToken:      alnum(48),
		InferenceToken:   alnum(48),
		APIKeys:          []string{alnum(40)},
	}
	s.TLS.CACert = ca.CertPEM
	local := []net.IP{net.ParseIP("127.0.0.1")}
	certs := []struct {
		names     []string
		cert, key *string
	}{
		{[]string{"server." + region + ".nomad", "nomad.service.consul", "localhost"}, &s.TLS.NomadServerCert, &s.TLS.NomadServerKey},
		{[]string{"client." + region + ".nomad", "localhost"}, &s.TLS.NomadClientCert, &s.TLS.NomadClientKey},
		{[]string{"server." + datacenter + ".consul", "localhost"}, &s.TLS.ConsulServerCert, &s.TLS.ConsulServerKey},
		{[]string{"client." + datacenter + ".consul", "localhost"}, &s.TLS.ConsulClientCert, &s.TLS.ConsulClientKey},
	}
	for _, c := range certs {
		cert, key, err := ca.issue(serverAndClient, c.names, local)
		if err != nil {
			return nil, fmt.Errorf("certificate for %s: %w", c.names[0], err)
		}
		*c.cert, *c.key = cert, key
	}

	// The RPC CA is not the agents': a task holds its tier's key, which
	// must never be a certificate Nomad's API accepts.
	rpcCA, err := newCA("slm-mesh RPC CA")
	if err != nil {
		return nil, err
	}
	s.TLS.RPCCACert = rpcCA.CertPEM
	for _, c := range []struct {
		name      string
		cert, key *string
	}{
		{"slm-caller", &s.TLS.RPCCallerCert, &s.TLS.RPCCallerKey},
		{"slm-inference", &s.TLS.RPCInferenceCert, &s.TLS.RPCInferenceKey},
	} {
		if *c.cert, *c.key, err = rpcCA.issue(serverOnly, []string{c.name}, nil); err != nil {
			return nil, fmt.Errorf("RPC certificate for %s: %w", c.name, err)
		}
	}
	return s, nil
}

func pemBlock(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// gossipKey is 32 random bytes in standard base64, as `consul keygen`.
func gossipKey() string { return base64.StdEncoding.EncodeToString(randomBytes(32)) }

// uuid is a random (version 4) UUID in lower case, the form ACL tokens take.
func uuid() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// alnum is n random letters and digits.
func alnum(n int) string {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	out := make([]byte, n)
	for i, b := range randomBytes(n) {
		out[i] = chars[int(b)%len(chars)]
	}
	return string(out)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return b
}
