package clusterbox

import (
	"path/filepath"
	"testing"
)

// The hosts' passwd and group name a consul user and group (the machine's,
// or new ones with ids no entry uses) and keep every entry of the
// machine's.
func TestHostAccounts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	a, err := hostAccounts(passwd, group)
	if err != nil {
		t.Fatal(err)
	}
	users, err := readIDs(passwd)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := readIDs(group)
	if err != nil {
		t.Fatal(err)
	}
	machineUsers, _ := readIDs("/etc/passwd")
	machineGroups, _ := readIDs("/etc/group")
	if users["consul"] != a.consulUID || groups["consul"] != a.consulGID {
		t.Errorf("consul is %d:%d in the files, %d:%d in the accounts", users["consul"], groups["consul"], a.consulUID, a.consulGID)
	}
	for name, id := range machineUsers {
		if users[name] != id {
			t.Errorf("user %s: %d, the machine has %d", name, users[name], id)
		}
		if name != "consul" && id == a.consulUID {
			t.Errorf("the consul uid %d is %s's", id, name)
		}
	}
	for name, id := range machineGroups {
		if groups[name] != id {
			t.Errorf("group %s: %d, the machine has %d", name, groups[name], id)
		}
	}
	if uid, gid, err := a.ids("consul", "consul"); err != nil || uid != a.consulUID || gid != a.consulGID {
		t.Errorf("ids(consul, consul) = %d, %d, %v", uid, gid, err)
	}
	if _, _, err := a.ids("mallory", ""); err == nil {
		t.Error("an unknown User= was accepted")
	}
}
