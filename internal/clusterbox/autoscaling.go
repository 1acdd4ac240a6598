package clusterbox

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// autoScalingPort is the Auto Scaling stand-in's port on the bridge
// address, beside the emulator's.
const autoScalingPort = 4567

// autoScalingEndpoint is where the hosts' aws wrapper sends Auto Scaling
// calls.
func (b *Box) autoScalingEndpoint() string {
	return "https://" + net.JoinHostPort(b.gateway(), strconv.Itoa(autoScalingPort))
}

// AutoScaling stands in for the one Auto Scaling call the nodes make,
// CompleteLifecycleAction (drain.sh, once its node is drained), which
// moto_server does not implement. It answers it as AWS's query API does
// and records it; any other action gets AWS's error for an unknown one.
// It serves with the emulator's certificate, which the hosts trust.
type AutoScaling struct {
	srv *http.Server

	mu        sync.Mutex
	completed []LifecycleAction
}

// LifecycleAction is one CompleteLifecycleAction call.
type LifecycleAction struct {
	Group, Hook, Instance, Result string
}

// StartAutoScaling starts the stand-in; Close stops it.
func (b *Box) StartAutoScaling(ctx context.Context) (*AutoScaling, error) {
	etc := filepath.Join(b.cfg.Dir, "etc")
	cert, err := tls.LoadX509KeyPair(filepath.Join(etc, "emulator.pem"), filepath.Join(etc, "emulator-key.pem"))
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort(b.gateway(), strconv.Itoa(autoScalingPort)),
		&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	a := &AutoScaling{}
	a.srv = &http.Server{Handler: http.HandlerFunc(a.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = a.srv.Serve(ln) }()
	return a, nil
}

// Close stops the stand-in.
func (a *AutoScaling) Close() { _ = a.srv.Close() }

// Completed is every lifecycle action completed so far.
func (a *AutoScaling) Completed() []LifecycleAction {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]LifecycleAction(nil), a.completed...)
}

func (a *AutoScaling) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/xml")
	if err := r.ParseForm(); err != nil || r.Form.Get("Action") != "CompleteLifecycleAction" {
		w.WriteHeader(http.StatusBadRequest)
		_ = xml.NewEncoder(w).Encode(struct {
			XMLName xml.Name `xml:"ErrorResponse"`
			Type    string   `xml:"Error>Type"`
			Code    string   `xml:"Error>Code"`
			Message string   `xml:"Error>Message"`
		}{Type: "Sender", Code: "InvalidAction", Message: "the box's Auto Scaling stand-in answers CompleteLifecycleAction only"})
		return
	}
	a.mu.Lock()
	a.completed = append(a.completed, LifecycleAction{
		Group: r.Form.Get("AutoScalingGroupName"), Hook: r.Form.Get("LifecycleHookName"),
		Instance: r.Form.Get("InstanceId"), Result: r.Form.Get("LifecycleActionResult"),
	})
	a.mu.Unlock()
	_ = xml.NewEncoder(w).Encode(struct {
		XMLName   xml.Name `xml:"CompleteLifecycleActionResponse"`
		NS        string   `xml:"xmlns,attr"`
		Result    string   `xml:"CompleteLifecycleActionResult"`
		RequestID string   `xml:"ResponseMetadata>RequestId"`
	}{NS: "http://autoscaling.amazonaws.com/doc/2011-01-01/", RequestID: "box-" + strconv.FormatInt(time.Now().UnixNano(), 36)})
}
