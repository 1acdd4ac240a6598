package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// selfSigned writes a self-signed certificate for name and 127.0.0.1 and
// its key into dir and returns their paths.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestServerTLS: with -tls-cert and -tls-key the port speaks HTTPS only,
// with that certificate; without them it stays plain HTTP; one without the
// other, or files that do not load, are refused before anything listens.
func TestServerTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir, "slm-inference")
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

	f := New("test")
	flags := f.ServerTLS()
	if err := f.Parse([]string{"-tls-cert", certFile, "-tls-key", keyFile}); err != nil {
		t.Fatal(err)
	}
	cfg, err := flags.Config()
	if err != nil || cfg == nil {
		t.Fatalf("config %v, %v", cfg, err)
	}
	hs, err := StartHTTP("127.0.0.1:0", ok, PrivateTimeouts, cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hs.Run(canceled(), time.Second, func(context.Context) error { return nil }) })

	pool := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "slm-inference"},
	}}
	resp, err := client.Get("https://" + hs.Addr() + "/health")
	if err != nil {
		t.Fatalf("https: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("https: %s, TLS %v", resp.Status, resp.TLS != nil)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + hs.Addr() + "/health"); err == nil && resp.StatusCode == http.StatusOK {
		t.Fatal("plain HTTP is served beside TLS")
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-tls-cert", certFile}, "go together"},
		{[]string{"-tls-key", keyFile}, "go together"},
		{[]string{"-tls-cert", keyFile, "-tls-key", certFile}, "TLS certificate"},
	} {
		f := New("test")
		flags := f.ServerTLS()
		if err := f.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if _, err := flags.Config(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}

	f = New("test")
	flags = f.ServerTLS()
	if err := f.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cfg, err := flags.Config(); cfg != nil || err != nil {
		t.Errorf("without the flags: %v, %v; want plain HTTP", cfg, err)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
