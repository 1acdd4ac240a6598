// Package rpc is the WebSocket RPC that slm-mesh services use to call each
// other: JSON frames over one WebSocket per pair of peers, many calls
// multiplexed on it by id, with streaming results, cancellation, deadlines,
// typed error codes, a shared-token handshake and keepalive.
//
// A service serves methods with a Server mounted at PathRPC; a client holds a
// Conn per peer instance, usually through a Pool that follows a
// discovery.Resolver and spreads calls over the instances. docs/rpc.md
// describes the protocol on the wire. The package is a generic transport:
// which methods the mesh has, and what they carry, is internal/mesh's.
package rpc

import (
	"context"
	"time"
)

// PathRPC is the HTTP path where services mount Server and where Dial
// connects.
const PathRPC = "/rpc"

// Defaults used when a config field is left zero.
const (
	DefaultMaxFrameBytes    = 1 << 20
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultPingInterval     = 5 * time.Second
	DefaultPongTimeout      = 5 * time.Second
	DefaultChunkBuffer      = 1024
	DefaultCallTimeout      = 5 * time.Minute
)

type requestIDKey struct{}

// WithRequestID returns a context carrying the request id. Conn.Call sends it
// with the call, and the server puts it into the handler's context, so one
// id follows a request through every tier and every log line.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id carried by ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
