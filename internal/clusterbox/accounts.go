package clusterbox

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The rendered files name two system users besides root: consul (the
// Consul agent's User=, and the group of its configuration) and nobody
// (exec tasks, the model cache). The consul package creates the consul
// user on an EC2 instance; the box gives its hosts /etc/passwd and
// /etc/group files of their own, the machine's with a consul user and
// group added where the machine has none, so that it adds no user to the
// machine.

// readIDs maps the names in an /etc/passwd- or /etc/group-style file to
// their ids (third field).
func readIDs(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ids := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 3 {
			continue
		}
		if id, err := strconv.Atoi(fields[2]); err == nil {
			ids[fields[0]] = id
		}
	}
	return ids, sc.Err()
}

// freeID is the highest id below 1000 (the system range) that no entry
// uses.
func freeID(used map[string]int) (int, error) {
	taken := map[int]bool{}
	for _, id := range used {
		taken[id] = true
	}
	for id := 999; id >= 100; id-- {
		if !taken[id] {
			return id, nil
		}
	}
	return 0, fmt.Errorf("no free system id")
}

// hostAccounts writes the hosts' passwd and group files to passwdOut and
// groupOut and returns the ids the box uses.
func hostAccounts(passwdOut, groupOut string) (accounts, error) {
	var a accounts
	users, err := readIDs("/etc/passwd")
	if err != nil {
		return a, err
	}
	groups, err := readIDs("/etc/group")
	if err != nil {
		return a, err
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return a, err
	}
	group, err := os.ReadFile("/etc/group")
	if err != nil {
		return a, err
	}
	var ok bool
	if a.nobodyUID, ok = users["nobody"]; !ok {
		return a, fmt.Errorf("the machine has no nobody user")
	}
	if a.nogroupGID, ok = groups["nogroup"]; !ok {
		if a.nogroupGID, ok = groups["nobody"]; !ok {
			return a, fmt.Errorf("the machine has no nogroup (or nobody) group")
		}
	}
	if a.consulGID, ok = groups["consul"]; !ok {
		if a.consulGID, err = freeID(groups); err != nil {
			return a, err
		}
		group = fmt.Appendf(trimNL(group), "\nconsul:x:%d:\n", a.consulGID)
	}
	if a.consulUID, ok = users["consul"]; !ok {
		if a.consulUID, err = freeID(users); err != nil {
			return a, err
		}
		passwd = fmt.Appendf(trimNL(passwd), "\nconsul:x:%d:%d::/opt/consul:/usr/sbin/nologin\n", a.consulUID, a.consulGID)
	}
	if err := os.WriteFile(passwdOut, passwd, 0o644); err != nil {
		return a, err
	}
	return a, os.WriteFile(groupOut, group, 0o644)
}

func trimNL(b []byte) []byte { return []byte(strings.TrimRight(string(b), "\n")) }

// ids resolves a unit's User= and Group= (empty: root).
func (a accounts) ids(user, group string) (uid, gid int, err error) {
	switch user {
	case "", "root":
	case "consul":
		uid, gid = a.consulUID, a.consulGID
	case "nobody":
		uid, gid = a.nobodyUID, a.nogroupGID
	default:
		return 0, 0, fmt.Errorf("unknown User=%s", user)
	}
	switch group {
	case "":
	case "root":
		gid = 0
	case "consul":
		gid = a.consulGID
	default:
		return 0, 0, fmt.Errorf("unknown Group=%s", group)
	}
	return uid, gid, nil
}
