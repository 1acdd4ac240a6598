package clusterbox

import (
	"bufio"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Unit is the part of a systemd unit that the box acts on. There is no
// systemd in the box's hosts (nor as the machine's PID 1), so the box
// starts each host's units itself, as systemd would at boot: every
// service enabled for multi-user.target, ordered by After=/Before=, each
// command with the unit's User=/Group=. What it leaves out is listed in
// tools/box/README.md.
type Unit struct {
	Name string
	// Type is simple (the default), notify or oneshot.
	Type string
	// User and Group run the commands; empty: root.
	User, Group string
	// ExecStartPre commands run in order before ExecStart; one whose path
	// starts with "-" may fail.
	ExecStartPre, ExecStart [][]string
	// After and Before order the unit against others. Requires= makes a
	// failure of the required unit fail this one too (Wants= only pulls
	// units in, and every boot unit of a host is started anyway).
	After, Before, Requires []string
	// Conditions are ConditionPathExists=, ConditionDirectoryNotEmpty= and
	// the like, as written ("ConditionPathExists=!/var/lib/x"): one that
	// does not hold skips the unit. Asserts (AssertPathIsMountPoint=...)
	// fail it.
	Conditions, Asserts []string
	// RequiresMountsFor lists paths whose mounts the unit requires; the box
	// checks that each is a mount point in the host (a server's data
	// directory is one, as the data volume's mount is on EC2).
	RequiresMountsFor []string
	// WantedBy is the [Install] section's targets: a unit is started at
	// boot when it names multi-user.target. RequiredBy names units that
	// require this one once it is enabled.
	WantedBy, RequiredBy []string
	// Restart is the [Service] Restart= policy; a oneshot with on-failure
	// is run again after RestartSec.
	Restart    string
	RestartSec string
}

// parseUnit reads a unit file and its drop-ins (in order), as systemd
// merges them: list settings accumulate, an empty assignment resets them,
// single values are replaced.
func parseUnit(name string, texts ...string) (*Unit, error) {
	u := &Unit{Name: name, Type: "simple"}
	for _, text := range texts {
		section := ""
		sc := bufio.NewScanner(strings.NewReader(joinContinuations(text)))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
				continue
			}
			if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
				section = line[1 : len(line)-1]
				continue
			}
			key, value, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("%s: not a setting: %q", name, line)
			}
			u.set(section, strings.TrimSpace(key), strings.TrimSpace(value))
		}
	}
	return u, nil
}

func (u *Unit) set(section, key, value string) {
	list := func(l *[]string) {
		if value == "" {
			*l = nil
			return
		}
		*l = append(*l, strings.Fields(value)...)
	}
	command := func(l *[][]string) {
		if value == "" {
			*l = nil
			return
		}
		*l = append(*l, strings.Fields(value))
	}
	switch section + "." + key {
	case "Unit.After":
		list(&u.After)
	case "Unit.Before":
		list(&u.Before)
	case "Unit.Requires":
		list(&u.Requires)
	case "Unit.RequiresMountsFor":
		list(&u.RequiresMountsFor)
	case "Install.WantedBy":
		list(&u.WantedBy)
	case "Install.RequiredBy":
		list(&u.RequiredBy)
	case "Service.Type":
		u.Type = value
	case "Service.User":
		u.User = value
	case "Service.Group":
		u.Group = value
	case "Service.ExecStartPre":
		command(&u.ExecStartPre)
	case "Service.ExecStart":
		command(&u.ExecStart)
	case "Service.Restart":
		u.Restart = value
	case "Service.RestartSec":
		u.RestartSec = value
	default:
		switch {
		case section == "Unit" && strings.HasPrefix(key, "Condition"):
			u.Conditions = append(u.Conditions, strings.TrimPrefix(key, "Condition")+"="+value)
		case section == "Unit" && strings.HasPrefix(key, "Assert"):
			u.Asserts = append(u.Asserts, strings.TrimPrefix(key, "Assert")+"="+value)
		}
	}
}

func joinContinuations(text string) string {
	return strings.ReplaceAll(text, "\\\n", " ")
}

// bootUnits picks the services of a host's files that start at boot (those
// wanted by multi-user.target; timers and the services they start are left
// out), each merged with its drop-ins, in an order that keeps every
// After=/Before= between them.
func bootUnits(files map[string]string) ([]*Unit, error) {
	const dir = "/etc/systemd/system/"
	var units []*Unit
	for p, text := range files {
		if path.Dir(p)+"/" != dir || path.Ext(p) != ".service" {
			continue
		}
		name := path.Base(p)
		var dropins []string
		for q := range files {
			if path.Dir(q) == dir+name+".d" && path.Ext(q) == ".conf" {
				dropins = append(dropins, q)
			}
		}
		slices.Sort(dropins)
		texts := []string{text}
		for _, q := range dropins {
			texts = append(texts, files[q])
		}
		u, err := parseUnit(name, texts...)
		if err != nil {
			return nil, err
		}
		if slices.Contains(u.WantedBy, "multi-user.target") {
			units = append(units, u)
		}
	}
	return orderUnits(units)
}

// orderUnits sorts units so that a unit comes after every unit it must
// wait for (startDeps); ties keep name order, so the result does not
// depend on map order. A cycle is an error, as systemd would report one.
func orderUnits(units []*Unit) ([]*Unit, error) {
	slices.SortFunc(units, func(a, b *Unit) int { return strings.Compare(a.Name, b.Name) })
	deps := startDeps(units)
	var out []*Unit
	done := map[string]bool{}
	for len(out) < len(units) {
		progress := false
		for _, u := range units {
			if done[u.Name] || !allDone(deps[u.Name], done) {
				continue
			}
			out = append(out, u)
			done[u.Name] = true
			progress = true
			break // restart from the first name: a stable order
		}
		if !progress {
			return nil, fmt.Errorf("ordering cycle among the units %v", deps)
		}
	}
	return out, nil
}

// startDeps maps each unit's name to the units among these that must have
// started before it starts: those it is After=, and those that are
// Before= it.
func startDeps(units []*Unit) map[string][]string {
	present := map[string]bool{}
	for _, u := range units {
		present[u.Name] = true
	}
	deps := map[string][]string{}
	for _, u := range units {
		for _, a := range u.After {
			if present[a] {
				deps[u.Name] = append(deps[u.Name], a)
			}
		}
		for _, b := range u.Before {
			if present[b] {
				deps[b] = append(deps[b], u.Name)
			}
		}
	}
	return deps
}

func allDone(names []string, done map[string]bool) bool {
	for _, n := range names {
		if !done[n] {
			return false
		}
	}
	return true
}

// waitsFor says whether starting other units must wait for u: systemd
// starts a unit ordered After= another only once that one has finished
// starting, which for a oneshot is when it exits and for notify when the
// process says READY=1. Nothing waits for a simple service.
func (u *Unit) waitsFor() bool { return u.Type == "oneshot" || u.Type == "notify" }
