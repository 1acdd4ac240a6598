package clusterbox

import (
	"net/url"
	"strings"
	"testing"
)

// The binaries' URLs move to the emulator, in go-getter's path style with
// the credentials that make it use a custom endpoint; nothing else of the
// file changes.
func TestReleaseVars(t *testing.T) {
	t.Parallel()
	b := &Box{cfg: Config{Region: "eu-west-1"}, state: State{Endpoint: "https://10.213.7.1:4566"}}
	in := `version = "v1"

gateway_binary_url    = "s3::https://slm-box-artifacts.s3.eu-west-1.amazonaws.com/releases/v1/linux_amd64/gateway"
gateway_binary_sha256 = "abc"
`
	out := string(b.releaseVars([]byte(in)))
	want := `gateway_binary_url    = "s3::https://10.213.7.1:4566/slm-box-artifacts/releases/v1/linux_amd64/gateway?aws_access_key_id=box&aws_access_key_secret=box&region=eu-west-1"`
	if !strings.Contains(out, want) {
		t.Fatalf("rewritten:\n%s\nwant the line\n%s", out, want)
	}
	if !strings.Contains(out, `gateway_binary_sha256 = "abc"`) || !strings.Contains(out, `version = "v1"`) {
		t.Errorf("other lines changed:\n%s", out)
	}
	u, err := url.Parse(strings.TrimPrefix(strings.Split(want, `"`)[1], "s3::"))
	if err != nil || u.Query().Get("region") != "eu-west-1" {
		t.Errorf("not a URL go-getter reads: %v %v", u, err)
	}
}
