// Package consultest runs a real Consul agent (in -dev mode, on loopback
// ports of its own) for tests of code that talks to Consul.
//
// The agent binary is found as consulagent.FindBinary finds it. When none is
// found the test is skipped, except under CI (env CI set), where a missing
// agent is a failure: CI must build it.
package consultest

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/slm-mesh/slm-mesh/internal/consulagent"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// EnvBinary names the environment variable that points at a consul binary.
const EnvBinary = consulagent.EnvBinary

// logTailLines of the agent's log are shown when a test fails.
const logTailLines = 60

// Agent is a running Consul dev agent owned by one test.
type Agent struct {
	*consulagent.Agent
	t      testing.TB
	client *api.Client
}

// Start starts a Consul dev agent for t, waits until it has a leader and
// stops it in t.Cleanup. It skips t when no consul binary is found (fails it
// under CI).
func Start(t testing.TB) *Agent {
	t.Helper()
	bin, err := consulagent.FindBinary(modeltest.RepoRoot())
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("consultest: %v (CI is set, so this is a failure)", err)
		}
		t.Skipf("consultest: %v", err)
	}
	agent, err := consulagent.Start(bin, t.TempDir())
	if err != nil {
		t.Fatalf("consultest: %v", err)
	}
	a := &Agent{Agent: agent, t: t}
	t.Cleanup(func() {
		// The tail first: after Stop it would show only the agent leaving.
		if t.Failed() {
			a.logTail()
		}
		a.Stop()
	})
	if a.client, err = agent.Client(); err != nil {
		t.Fatalf("consultest: client: %v", err)
	}
	return a
}

// Client is an API client for the agent. It stays valid across Restart.
func (a *Agent) Client() *api.Client { return a.client }

// Restart stops the agent and starts it again on the same ports, so clients
// (Client, or any other pointed at HTTPAddr) reconnect by themselves. A dev
// agent keeps its state in memory: registrations are gone after Restart.
func (a *Agent) Restart() {
	a.t.Helper()
	if err := a.Agent.Restart(); err != nil {
		a.logTail()
		a.t.Fatalf("consultest: restart: %v", err)
	}
}

// logTail shows the end of the agent's log in the test's log.
func (a *Agent) logTail() {
	data, err := os.ReadFile(a.LogPath())
	if err != nil {
		a.t.Logf("consultest: no agent log: %v", err)
		return
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	a.t.Logf("consultest: last %d lines of the consul agent log:\n%s", len(lines), strings.Join(lines, "\n"))
}
