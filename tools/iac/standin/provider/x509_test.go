package provider

import (
	"crypto/x509"
	"encoding/pem"
	"regexp"
	"strings"
	"testing"
	"time"
)

func parseCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("no certificate in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The chain terraform/aws builds: a CA, a request with names, a leaf it
// signs; the leaf must verify against the CA for the names and uses asked.
func TestCAIssuesVerifiableLeaf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		algorithm string
		bits      int
		curve     string
	}{
		{"ECDSA", 0, "P256"},
		{"RSA", 2048, ""},
		{"ED25519", 0, ""},
	} {
		t.Run(tc.algorithm, func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			caKey, err := generateKey(tc.algorithm, tc.bits, tc.curve)
			if err != nil {
				t.Fatal(err)
			}
			ca, alg, err := selfSigned(caKey.private, subject{CommonName: "test CA", Organization: "slm-mesh"}, names{},
				certOptions{ValidityHours: 24, AllowedUses: []string{"cert_signing", "crl_signing", "digital_signature"}, IsCA: true}, now)
			if err != nil {
				t.Fatal(err)
			}
			if alg != tc.algorithm {
				t.Errorf("key algorithm %q, want %q", alg, tc.algorithm)
			}
			leafKey, err := generateKey(tc.algorithm, tc.bits, tc.curve)
			if err != nil {
				t.Fatal(err)
			}
			csr, _, err := certRequest(leafKey.private, subject{CommonName: "server.dc1.consul"},
				names{DNS: []string{"server.dc1.consul", "localhost"}, IP: []string{"127.0.0.1"}})
			if err != nil {
				t.Fatal(err)
			}
			leaf, _, err := locallySigned(csr, caKey.private, ca.PEM,
				certOptions{ValidityHours: 48, AllowedUses: []string{"digital_signature", "key_encipherment", "server_auth", "client_auth"}}, now)
			if err != nil {
				t.Fatal(err)
			}

			caCert, leafCert := parseCert(t, ca.PEM), parseCert(t, leaf.PEM)
			if !caCert.IsCA || caCert.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Errorf("CA: IsCA %v, key usage %b", caCert.IsCA, caCert.KeyUsage)
			}
			if leafCert.IsCA || leafCert.Subject.CommonName != "server.dc1.consul" {
				t.Errorf("leaf: IsCA %v, subject %q", leafCert.IsCA, leafCert.Subject)
			}
			roots := x509.NewCertPool()
			roots.AddCert(caCert)
			for _, host := range []string{"server.dc1.consul", "localhost", "127.0.0.1"} {
				if _, err := leafCert.Verify(x509.VerifyOptions{
					DNSName: host, Roots: roots, CurrentTime: now.Add(time.Hour),
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				}); err != nil {
					t.Errorf("leaf does not verify for %s: %v", host, err)
				}
			}
			if got, want := leafCert.NotAfter.Sub(leafCert.NotBefore), 48*time.Hour; got != want {
				t.Errorf("validity %v, want %v", got, want)
			}
			if leaf.End != leafCert.NotAfter.UTC().Format(time.RFC3339) {
				t.Errorf("validity_end_time %q, certificate ends %v", leaf.End, leafCert.NotAfter)
			}
		})
	}
}

func TestLocallySignedRefusesAnotherCAsKey(t *testing.T) {
	t.Parallel()
	now := time.Now()
	k1, err := generateKey("ECDSA", 0, "P256")
	if err != nil {
		t.Fatal(err)
	}
	k2, err := generateKey("ECDSA", 0, "P256")
	if err != nil {
		t.Fatal(err)
	}
	ca, _, err := selfSigned(k1.private, subject{CommonName: "CA"}, names{}, certOptions{ValidityHours: 1, IsCA: true, AllowedUses: []string{"cert_signing"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, err := certRequest(k2.private, subject{CommonName: "leaf"}, names{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := locallySigned(csr, k2.private, ca.PEM, certOptions{ValidityHours: 1}, now); err == nil {
		t.Error("a certificate was signed with a key that is not the CA's")
	}
}

func TestRefusesBadInput(t *testing.T) {
	t.Parallel()
	k, err := generateKey("ECDSA", 0, "P256")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for name, f := range map[string]func() error{
		"unknown algorithm": func() error { _, err := generateKey("DSA", 0, ""); return err },
		"unknown curve":     func() error { _, err := generateKey("ECDSA", 0, "P999"); return err },
		"unknown use": func() error {
			_, _, err := selfSigned(k.private, subject{}, names{}, certOptions{ValidityHours: 1, AllowedUses: []string{"server-auth"}}, now)
			return err
		},
		"zero validity": func() error {
			_, _, err := selfSigned(k.private, subject{}, names{}, certOptions{}, now)
			return err
		},
		"bad IP": func() error {
			_, _, err := certRequest(k.private, subject{}, names{IP: []string{"localhost"}})
			return err
		},
		"not a key": func() error { _, _, err := certRequest("x", subject{}, names{}); return err },
	} {
		if f() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPrivateKeyPEMForms(t *testing.T) {
	t.Parallel()
	for alg, block := range map[string]string{"RSA": "RSA PRIVATE KEY", "ECDSA": "EC PRIVATE KEY", "ED25519": "PRIVATE KEY"} {
		k, err := generateKey(alg, 2048, "P256")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k.private, "-----BEGIN "+block+"-----") ||
			!strings.HasPrefix(k.privatePKCS8, "-----BEGIN PRIVATE KEY-----") ||
			!strings.HasPrefix(k.public, "-----BEGIN PUBLIC KEY-----") {
			t.Errorf("%s: PEM forms %q / %q / %q", alg, k.private[:40], k.privatePKCS8[:30], k.public[:30])
		}
		if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(k.id) {
			t.Errorf("%s: id %q", alg, k.id)
		}
	}
}

func TestRandomValues(t *testing.T) {
	t.Parallel()
	u, err := uuid4()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(u) {
		t.Errorf("uuid %q is not a version 4 UUID", u)
	}
	s, err := randomString(200, "ab")
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 200 || strings.Trim(s, "ab") != "" || !strings.Contains(s, "a") || !strings.Contains(s, "b") {
		t.Errorf("randomString(200, \"ab\") = %q", s)
	}
	if _, err := randomString(10, ""); err == nil {
		t.Error("an empty character set was accepted")
	}
}
