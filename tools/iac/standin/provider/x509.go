package provider

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// keyPEMs is a generated private key in the PEM forms the tls provider gives.
type keyPEMs struct {
	private      string // PKCS#1 (RSA), SEC 1 (ECDSA) or PKCS#8 (ED25519), as the tls provider writes them
	privatePKCS8 string
	public       string // PKIX
	id           string // hex SHA-1 of the public key's DER, as the tls provider's id
}

// generateKey makes a private key of algorithm (RSA, ECDSA or ED25519) with
// rsaBits or curve (P224, P256, P384, P521).
func generateKey(algorithm string, rsaBits int, curve string) (keyPEMs, error) {
	var (
		key     crypto.Signer
		private *pem.Block
		err     error
	)
	switch algorithm {
	case "RSA":
		var k *rsa.PrivateKey
		if k, err = rsa.GenerateKey(rand.Reader, rsaBits); err == nil {
			key, private = k, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
		}
	case "ECDSA":
		curves := map[string]elliptic.Curve{"P224": elliptic.P224(), "P256": elliptic.P256(), "P384": elliptic.P384(), "P521": elliptic.P521()}
		c, ok := curves[curve]
		if !ok {
			return keyPEMs{}, fmt.Errorf("unsupported ecdsa_curve %q (P224, P256, P384, P521)", curve)
		}
		var k *ecdsa.PrivateKey
		if k, err = ecdsa.GenerateKey(c, rand.Reader); err == nil {
			var der []byte
			if der, err = x509.MarshalECPrivateKey(k); err == nil {
				key, private = k, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
			}
		}
	case "ED25519":
		var k ed25519.PrivateKey
		if _, k, err = ed25519.GenerateKey(rand.Reader); err == nil {
			var der []byte
			if der, err = x509.MarshalPKCS8PrivateKey(k); err == nil {
				key, private = k, &pem.Block{Type: "PRIVATE KEY", Bytes: der}
			}
		}
	default:
		return keyPEMs{}, fmt.Errorf("unsupported algorithm %q (RSA, ECDSA, ED25519)", algorithm)
	}
	if err != nil {
		return keyPEMs{}, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return keyPEMs{}, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return keyPEMs{}, err
	}
	sum := sha1.Sum(pub)
	return keyPEMs{
		private:      string(pem.EncodeToMemory(private)),
		privatePKCS8: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})),
		public:       string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
		id:           hex.EncodeToString(sum[:]),
	}, nil
}

// parseKey reads a private key in any of the PEM forms generateKey writes.
func parseKey(pemText string) (crypto.Signer, string, error) {
	b, _ := pem.Decode([]byte(pemText))
	if b == nil {
		return nil, "", errors.New("no PEM block in the private key")
	}
	var (
		key any
		err error
	)
	switch b.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	default:
		return nil, "", fmt.Errorf("unsupported PEM block %q for a private key", b.Type)
	}
	if err != nil {
		return nil, "", err
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, "RSA", nil
	case *ecdsa.PrivateKey:
		return k, "ECDSA", nil
	case ed25519.PrivateKey:
		return k, "ED25519", nil
	}
	return nil, "", fmt.Errorf("unsupported private key type %T", key)
}

// algorithmOf names a public key's algorithm as the tls provider does.
func algorithmOf(pub any) string {
	switch pub.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "ECDSA"
	case ed25519.PublicKey:
		return "ED25519"
	}
	return "UNKNOWN"
}

// subject is the distinguished name of a request or certificate.
type subject struct {
	CommonName, Organization, OrganizationalUnit, Locality, Province, Country, PostalCode, SerialNumber string
	StreetAddress                                                                                       []string
}

func (s subject) name() pkix.Name {
	one := func(v string) []string {
		if v == "" {
			return nil
		}
		return []string{v}
	}
	return pkix.Name{
		CommonName:         s.CommonName,
		Organization:       one(s.Organization),
		OrganizationalUnit: one(s.OrganizationalUnit),
		Locality:           one(s.Locality),
		Province:           one(s.Province),
		Country:            one(s.Country),
		PostalCode:         one(s.PostalCode),
		StreetAddress:      s.StreetAddress,
		SerialNumber:       s.SerialNumber,
	}
}

// names are the subject alternative names of a request or certificate.
type names struct {
	DNS, IP, URI []string
}

func (n names) parse() ([]net.IP, []*url.URL, error) {
	var ips []net.IP
	for _, s := range n.IP {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, nil, fmt.Errorf("invalid IP address %q", s)
		}
		ips = append(ips, ip)
	}
	var uris []*url.URL
	for _, s := range n.URI {
		u, err := url.Parse(s)
		if err != nil {
			return nil, nil, fmt.Errorf("invalid URI %q: %w", s, err)
		}
		uris = append(uris, u)
	}
	return ips, uris, nil
}

// certRequest signs a PKCS#10 request for subj and alt with keyPEM.
func certRequest(keyPEM string, subj subject, alt names) (string, string, error) {
	key, algorithm, err := parseKey(keyPEM)
	if err != nil {
		return "", "", err
	}
	ips, uris, err := alt.parse()
	if err != nil {
		return "", "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: subj.name(), DNSNames: alt.DNS, IPAddresses: ips, URIs: uris,
	}, key)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), algorithm, nil
}

// certOptions are what a certificate asserts beyond its subject and key.
type certOptions struct {
	ValidityHours int64
	AllowedUses   []string
	IsCA          bool
	SetSubjectKey bool
}

// issued is a signed certificate with its validity as the tls provider
// reports it (RFC 3339).
type issued struct {
	PEM, Serial, Start, End string
}

var keyUsages = map[string]x509.KeyUsage{
	"digital_signature":  x509.KeyUsageDigitalSignature,
	"content_commitment": x509.KeyUsageContentCommitment,
	"key_encipherment":   x509.KeyUsageKeyEncipherment,
	"data_encipherment":  x509.KeyUsageDataEncipherment,
	"key_agreement":      x509.KeyUsageKeyAgreement,
	"cert_signing":       x509.KeyUsageCertSign,
	"crl_signing":        x509.KeyUsageCRLSign,
	"encipher_only":      x509.KeyUsageEncipherOnly,
	"decipher_only":      x509.KeyUsageDecipherOnly,
}

var extKeyUsages = map[string]x509.ExtKeyUsage{
	"any_extended":                  x509.ExtKeyUsageAny,
	"server_auth":                   x509.ExtKeyUsageServerAuth,
	"client_auth":                   x509.ExtKeyUsageClientAuth,
	"code_signing":                  x509.ExtKeyUsageCodeSigning,
	"email_protection":              x509.ExtKeyUsageEmailProtection,
	"ipsec_end_system":              x509.ExtKeyUsageIPSECEndSystem,
	"ipsec_tunnel":                  x509.ExtKeyUsageIPSECTunnel,
	"ipsec_user":                    x509.ExtKeyUsageIPSECUser,
	"timestamping":                  x509.ExtKeyUsageTimeStamping,
	"ocsp_signing":                  x509.ExtKeyUsageOCSPSigning,
	"microsoft_server_gated_crypto": x509.ExtKeyUsageMicrosoftServerGatedCrypto,
	"netscape_server_gated_crypto":  x509.ExtKeyUsageNetscapeServerGatedCrypto,
}

// template is the certificate o describes, valid from now.
func (o certOptions) template(now time.Time) (*x509.Certificate, error) {
	if o.ValidityHours < 1 {
		return nil, errors.New("validity_period_hours must be at least 1")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now,
		NotAfter:              now.Add(time.Duration(o.ValidityHours) * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  o.IsCA,
	}
	for _, u := range o.AllowedUses {
		if k, ok := keyUsages[u]; ok {
			t.KeyUsage |= k
		} else if e, ok := extKeyUsages[u]; ok {
			t.ExtKeyUsage = append(t.ExtKeyUsage, e)
		} else {
			return nil, fmt.Errorf("unknown allowed_uses value %q", u)
		}
	}
	return t, nil
}

// sign issues t for pub, signed by parent's key (t itself when self-signed).
func sign(t, parent *x509.Certificate, pub any, signer crypto.Signer, setSubjectKey bool) (issued, error) {
	if setSubjectKey || t.IsCA {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return issued{}, err
		}
		sum := sha1.Sum(der)
		t.SubjectKeyId = sum[:]
	}
	der, err := x509.CreateCertificate(rand.Reader, t, parent, pub, signer)
	if err != nil {
		return issued{}, err
	}
	return issued{
		PEM:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		Serial: t.SerialNumber.String(),
		Start:  t.NotBefore.UTC().Format(time.RFC3339),
		End:    t.NotAfter.UTC().Format(time.RFC3339),
	}, nil
}

// selfSigned issues a certificate for keyPEM's own key, signed by it.
func selfSigned(keyPEM string, subj subject, alt names, o certOptions, now time.Time) (issued, string, error) {
	key, algorithm, err := parseKey(keyPEM)
	if err != nil {
		return issued{}, "", err
	}
	t, err := o.template(now)
	if err != nil {
		return issued{}, "", err
	}
	if t.IPAddresses, t.URIs, err = alt.parse(); err != nil {
		return issued{}, "", err
	}
	t.Subject, t.DNSNames = subj.name(), alt.DNS
	out, err := sign(t, t, key.Public(), key, o.SetSubjectKey)
	return out, algorithm, err
}

// locallySigned issues a certificate for the request csrPEM, signed by the
// CA caCertPEM whose key is caKeyPEM. The request's subject and names are
// taken as they are, as the tls provider does.
func locallySigned(csrPEM, caKeyPEM, caCertPEM string, o certOptions, now time.Time) (issued, string, error) {
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return issued{}, "", errors.New("cert_request_pem holds no CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return issued{}, "", err
	}
	if err := csr.CheckSignature(); err != nil {
		return issued{}, "", fmt.Errorf("certificate request: %w", err)
	}
	b, _ = pem.Decode([]byte(caCertPEM))
	if b == nil || b.Type != "CERTIFICATE" {
		return issued{}, "", errors.New("ca_cert_pem holds no CERTIFICATE")
	}
	ca, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return issued{}, "", err
	}
	caKey, algorithm, err := parseKey(caKeyPEM)
	if err != nil {
		return issued{}, "", err
	}
	if !publicKeysEqual(caKey.Public(), ca.PublicKey) {
		return issued{}, "", errors.New("ca_private_key_pem is not the key of ca_cert_pem")
	}
	t, err := o.template(now)
	if err != nil {
		return issued{}, "", err
	}
	t.Subject, t.DNSNames, t.IPAddresses, t.URIs = csr.Subject, csr.DNSNames, csr.IPAddresses, csr.URIs
	out, err := sign(t, ca, csr.PublicKey, caKey, o.SetSubjectKey)
	return out, algorithm, err
}

func publicKeysEqual(a, b any) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// hashID is the hex SHA-1 of s, the id the tls provider gives a request.
func hashID(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
