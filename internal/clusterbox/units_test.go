package clusterbox

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// renderedUnits reads the plan module's unit files (none is a template but
// the snapshot timer, which the box does not start) as a node of kind has
// them.
func renderedUnits(t *testing.T, server bool) map[string]string {
	t.Helper()
	dir := filepath.Join(modeltest.RepoRoot(), "terraform", "modules", "plan", "templates", "systemd")
	names := []string{"consul.service", "nomad.service", "slm-secrets.service"}
	if server {
		names = append(names, "slm-acl-bootstrap.service", "slm-snapshot.service")
	} else {
		names = append(names, "slm-imds-guard.service")
	}
	files := map[string]string{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		files["/etc/systemd/system/"+n] = string(data)
	}
	return files
}

func unitNames(units []*Unit) []string {
	var names []string
	for _, u := range units {
		names = append(names, u.Name)
	}
	return names
}

// before says whether a comes before b in names.
func before(names []string, a, b string) bool {
	return slices.Index(names, a) >= 0 && slices.Index(names, a) < slices.Index(names, b)
}

func TestBootUnitsOfTheRenderedFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind   string
		server bool
		want   []string
		order  [][2]string
	}{
		{"client", false,
			[]string{"consul.service", "nomad.service", "slm-imds-guard.service", "slm-secrets.service"},
			[][2]string{{"slm-secrets.service", "consul.service"}, {"slm-secrets.service", "nomad.service"}, {"slm-imds-guard.service", "nomad.service"}}},
		{"server", true,
			[]string{"consul.service", "nomad.service", "slm-acl-bootstrap.service", "slm-secrets.service"},
			[][2]string{{"slm-secrets.service", "consul.service"}, {"consul.service", "slm-acl-bootstrap.service"}, {"nomad.service", "slm-acl-bootstrap.service"}}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			units, err := bootUnits(renderedUnits(t, tc.server))
			if err != nil {
				t.Fatal(err)
			}
			names := unitNames(units)
			sorted := slices.Sorted(slices.Values(names))
			if !slices.Equal(sorted, tc.want) {
				t.Errorf("boot units %v, want %v (the snapshot service only runs from its timer)", sorted, tc.want)
			}
			for _, o := range tc.order {
				if !before(names, o[0], o[1]) {
					t.Errorf("order %v: %s must start before %s", names, o[0], o[1])
				}
			}
			for _, u := range units {
				switch u.Name {
				case "consul.service":
					if u.Type != "notify" || u.User != "consul" || len(u.ExecStart) != 1 || u.ExecStart[0][0] != "/usr/bin/consul" {
						t.Errorf("consul.service parsed as %+v", u)
					}
				case "nomad.service":
					if len(u.ExecStartPre) != 1 || !strings.HasPrefix(u.ExecStartPre[0][0], "-") {
						t.Errorf("nomad.service's ExecStartPre %v, want the cpu-meta.sh that may fail", u.ExecStartPre)
					}
				}
			}
		})
	}
}

func TestParseUnitMergesDropins(t *testing.T) {
	t.Parallel()
	u, err := parseUnit("x.service", `[Unit]
After=a.service
[Service]
Type=simple
ExecStart=/bin/true \
  --flag
[Install]
WantedBy=multi-user.target
`, `[Unit]
After=
After=b.service
RequiresMountsFor=/opt/slm-data
[Service]
Type=oneshot
`)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u.After, []string{"b.service"}) {
		t.Errorf("After %v: an empty assignment resets the list", u.After)
	}
	if u.Type != "oneshot" || !slices.Equal(u.RequiresMountsFor, []string{"/opt/slm-data"}) {
		t.Errorf("drop-in not applied: %+v", u)
	}
	if !slices.Equal(u.ExecStart[0], []string{"/bin/true", "--flag"}) {
		t.Errorf("ExecStart %v: a continued line is one command", u.ExecStart)
	}
}

func TestOrderUnits(t *testing.T) {
	t.Parallel()
	a := &Unit{Name: "a.service", After: []string{"b.service"}}
	b := &Unit{Name: "b.service"}
	c := &Unit{Name: "c.service", Before: []string{"b.service"}}
	got, err := orderUnits([]*Unit{a, b, c})
	if err != nil {
		t.Fatal(err)
	}
	if names := unitNames(got); !slices.Equal(names, []string{"c.service", "b.service", "a.service"}) {
		t.Errorf("order %v", names)
	}
	b.After = []string{"a.service"}
	if _, err := orderUnits([]*Unit{a, b}); err == nil {
		t.Error("a cycle was not reported")
	}
}

func TestCommand(t *testing.T) {
	t.Parallel()
	b := &Box{cfg: Config{Dir: "/box"}}
	for _, tc := range []struct {
		line    []string
		want    []string
		mayFail bool
	}{
		{[]string{"/usr/bin/consul", "agent"}, []string{"/box/bin/consul", "agent"}, false},
		{[]string{"/usr/bin/nomad", "agent", "-config=/etc/nomad.d"}, []string{"/box/bin/nomad", "agent", "-config=/etc/nomad.d"}, false},
		{[]string{"-/bin/sh", "/opt/slm-mesh/cpu-meta.sh"}, []string{"/bin/sh", "/opt/slm-mesh/cpu-meta.sh"}, true},
		{[]string{"/opt/slm-mesh/secrets.sh"}, []string{"/opt/slm-mesh/secrets.sh"}, false},
	} {
		got, mayFail := b.command(tc.line)
		if !slices.Equal(got, tc.want) || mayFail != tc.mayFail {
			t.Errorf("command(%v) = %v, %v; want %v, %v", tc.line, got, mayFail, tc.want, tc.mayFail)
		}
	}
}
