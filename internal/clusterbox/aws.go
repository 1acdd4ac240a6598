package clusterbox

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The AWS side of the box is moto_server, an emulator of AWS's APIs, on the
// bridge's address over TLS (a certificate from the box's emulator CA,
// which every host trusts). It is the one thing in the box that is not the
// real product: AWS itself cannot run here. It holds the SSM parameters
// the rendered secrets.sh and acl-bootstrap.sh read, the EC2 instances
// that cloud auto-join finds the servers by, and the S3 bucket of the
// releases and the model.

// motoPort is the emulator's port on the bridge address.
const motoPort = 4566

// emulatorKeyID and emulatorSecret are the AWS credentials everything in
// the box signs with; the emulator accepts any.
const (
	emulatorKeyID  = "box"
	emulatorSecret = "box"
)

// startMoto starts moto_server on addr:motoPort with the certificate and
// key files given, logging to logPath, and waits until it answers.
func startMoto(ctx context.Context, motoBin, addr, certFile, keyFile, logPath string, client *http.Client) (*os.Process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(motoBin, "-H", addr, "-p", strconv.Itoa(motoPort), "-c", certFile, "-k", keyFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = detached()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("moto_server: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped while this process lives
	endpoint := "https://" + addr + ":" + strconv.Itoa(motoPort)
	err = Poll(ctx, 60*time.Second, func() error {
		resp, err := client.Get(endpoint + "/moto-api/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("moto_server did not answer at %s (log %s): %w", endpoint, logPath, err)
	}
	return cmd.Process, nil
}

// emulator is a client of the AWS API emulator for the few calls the box
// makes itself (the setup that terraform/aws does on AWS). The emulator
// does not check signatures, so requests carry an Authorization header
// only to name the service and region, as a signed request's scope does.
type emulator struct {
	endpoint string
	region   string
	client   *http.Client
}

func (e *emulator) do(ctx context.Context, service, method, path string, header http.Header, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.endpoint+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/20260101/%s/%s/aws4_request, SignedHeaders=host, Signature=0", emulatorKeyID, e.region, service))
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s %s: %s: %s", service, method, path, resp.Status, bytes.TrimSpace(data))
	}
	return data, nil
}

// putParameter stores a SecureString parameter, as terraform/aws's
// aws_ssm_parameter does.
func (e *emulator) putParameter(ctx context.Context, name, value string) error {
	body, _ := json.Marshal(map[string]any{"Name": name, "Value": value, "Type": "SecureString", "Overwrite": true})
	_, err := e.do(ctx, "ssm", http.MethodPost, "/", http.Header{
		"X-Amz-Target": {"AmazonSSM.PutParameter"},
		"Content-Type": {"application/x-amz-json-1.1"},
	}, body)
	return err
}

// ec2 calls an EC2 query API action and decodes the reply into out.
func (e *emulator) ec2(ctx context.Context, params url.Values, out any) error {
	params.Set("Version", "2016-11-15")
	data, err := e.do(ctx, "ec2", http.MethodPost, "/", http.Header{
		"Content-Type": {"application/x-www-form-urlencoded"},
	}, []byte(params.Encode()))
	if err != nil {
		return fmt.Errorf("ec2 %s: %w", params.Get("Action"), err)
	}
	if out == nil {
		return nil
	}
	return xml.Unmarshal(data, out)
}

// serverInstances registers one running EC2 instance per server address,
// in a VPC and subnet of the box's addresses, tagged as terraform/aws tags
// the servers: what cloud auto-join (retry_join "provider=aws ...") finds
// them by.
func (e *emulator) serverInstances(ctx context.Context, vpcCIDR, subnetCIDR, tagKey, tagValue string, ips []string) error {
	var vpc struct {
		ID string `xml:"vpc>vpcId"`
	}
	if err := e.ec2(ctx, url.Values{"Action": {"CreateVpc"}, "CidrBlock": {vpcCIDR}}, &vpc); err != nil {
		return err
	}
	var subnet struct {
		ID string `xml:"subnet>subnetId"`
	}
	if err := e.ec2(ctx, url.Values{"Action": {"CreateSubnet"}, "VpcId": {vpc.ID}, "CidrBlock": {subnetCIDR}}, &subnet); err != nil {
		return err
	}
	var images struct {
		IDs []string `xml:"imagesSet>item>imageId"`
	}
	if err := e.ec2(ctx, url.Values{"Action": {"DescribeImages"}}, &images); err != nil {
		return err
	}
	if len(images.IDs) == 0 {
		return fmt.Errorf("the emulator has no machine image to start instances from")
	}
	for _, ip := range ips {
		err := e.ec2(ctx, url.Values{
			"Action": {"RunInstances"}, "ImageId": {images.IDs[0]}, "InstanceType": {"t3.small"},
			"MinCount": {"1"}, "MaxCount": {"1"}, "SubnetId": {subnet.ID}, "PrivateIpAddress": {ip},
			"TagSpecification.1.ResourceType": {"instance"},
			"TagSpecification.1.Tag.1.Key":    {tagKey}, "TagSpecification.1.Tag.1.Value": {tagValue},
		}, nil)
		if err != nil {
			return err
		}
	}
	return nil
}

// createBucket makes an S3 bucket in the emulator's region.
func (e *emulator) createBucket(ctx context.Context, bucket string) error {
	body := `<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>` + e.region + `</LocationConstraint></CreateBucketConfiguration>`
	_, err := e.do(ctx, "s3", http.MethodPut, "/"+bucket, http.Header{"Content-Type": {"application/xml"}}, []byte(body))
	return err
}

// putPublicObject uploads a file readable without credentials (as a public
// https download is, such as the model on AWS).
func (e *emulator) putPublicObject(ctx context.Context, bucket, key, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	_, err = e.do(ctx, "s3", http.MethodPut, "/"+bucket+"/"+key, http.Header{
		"Content-Type": {"application/octet-stream"},
		"X-Amz-Acl":    {"public-read"},
	}, data)
	return err
}

// awsWrapper is the `aws` command first on every box PATH: the real aws
// CLI with the emulator's endpoint and CA bundle added. Debian's aws CLI
// (2.9) predates AWS_ENDPOINT_URL, so the endpoint must be a flag; this
// is the one stand-in for AWS's endpoints in what the rendered scripts run.
// caBundle is the hosts' CA bundle, given by its path on the machine so
// that the wrapper works on the hosts and on the machine (tools/release).
// Auto Scaling goes to autoScalingEndpoint instead: moto lacks
// CompleteLifecycleAction, which the drain drill's stand-in answers.
func awsWrapper(realAWS, endpoint, autoScalingEndpoint, caBundle string) string {
	return fmt.Sprintf(`#!/bin/sh
# The cluster in a box (internal/clusterbox): the aws CLI against the AWS
# API emulator. Debian's aws CLI has no AWS_ENDPOINT_URL, hence the flag.
# The credentials stand in for an instance role; the emulator takes any.
export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s
export AWS_CA_BUNDLE=%s
endpoint=%s
if [ "$1" = autoscaling ]; then
	endpoint=%s
fi
exec %s --endpoint-url "$endpoint" "$@"
`, emulatorKeyID, emulatorSecret, shellQuote(caBundle), shellQuote(endpoint), shellQuote(autoScalingEndpoint), shellQuote(realAWS))
}

// findRealAWS is the aws CLI: Debian's where it is installed, else the
// first on PATH.
func findRealAWS() (string, error) {
	if fi, err := os.Stat("/usr/bin/aws"); err == nil && !fi.IsDir() {
		return "/usr/bin/aws", nil
	}
	return exec.LookPath("aws")
}

// trustingClient is an HTTP client that trusts the CA certificate in
// caPEM (and nothing else).
func trustingClient(caPEM string) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	return &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

// caBundle is the machine's CA bundle with the emulator's CA added: what
// each host trusts (/etc/ssl/certs/ca-certificates.crt in its mount
// namespace), as an EC2 instance trusts the CAs of AWS's endpoints.
func caBundle(machineBundle, emulatorCA string) (string, error) {
	data, err := os.ReadFile(machineBundle)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(data), "\n") + "\n" + emulatorCA, nil
}

// boxBin lays out the box's bin directory, first on every PATH of the
// box: consul and nomad (the built agents, which the units and scripts
// call by those names) and the aws wrapper.
func boxBin(dir, consulBin, nomadBin, wrapper string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, target := range map[string]string{"consul": consulBin, "nomad": nomadBin} {
		link := filepath.Join(dir, name)
		_ = os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(dir, "aws"), wrapper, 0o755, 0, 0)
}
