package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

const (
	// sendQueue is how many encoded frames may wait for the writer. Senders
	// block beyond it, which is the connection's back-pressure.
	sendQueue = 256
	// maxBatchBytes caps how many queued frames the writer packs into one
	// WebSocket message (never more than the sender's MaxFrameBytes).
	maxBatchBytes = 32 << 10
	// socketBuffer is gorilla's read and write buffer size, big enough that a
	// full batch leaves in one write.
	socketBuffer = maxBatchBytes + 64
	// closeWait bounds the courtesy close frame sent when a connection ends.
	closeWait = time.Second
	// keepReadBuffer is the largest read buffer kept between messages.
	keepReadBuffer = 256 << 10
)

// pingFrame is written as is by the keepalive; it is never pooled.
var pingFrame = &frameBuf{b: []byte(`{"type":"ping"}` + "\n")}

// wireConfig is what both ends of a connection configure alike.
type wireConfig struct {
	maxFrameBytes int64
	pingInterval  time.Duration
	pongTimeout   time.Duration
	log           hclog.Logger
	// dispatch handles every call, chunk, result, error and cancel frame. It
	// runs on the read goroutine and must not block.
	dispatch func(*frame)
	// onClose runs once, after the connection is closed, with the reason.
	onClose func(err *chat.Error)
}

// wire is one WebSocket connection as both ends use it: a read goroutine that
// decodes frames and dispatches them, a write goroutine that packs queued
// frames into WebSocket messages, and the keepalive. Only the write
// goroutine writes data messages, so gorilla's one-writer rule holds without
// a lock on the hot path.
type wire struct {
	ws  *websocket.Conn
	cfg wireConfig
	out chan *frameBuf

	closeOnce sync.Once
	closed    chan struct{}
	err       *chat.Error   // why the wire closed; set before closed is closed
	readDone  chan struct{} // closed when the read goroutine has returned
}

func newWire(ws *websocket.Conn, cfg wireConfig) *wire {
	ws.SetReadLimit(cfg.maxFrameBytes)
	return &wire{ws: ws, cfg: cfg, out: make(chan *frameBuf, sendQueue), closed: make(chan struct{}), readDone: make(chan struct{})}
}

// start runs the read and write goroutines. Callers finish setting up what
// dispatch and onClose use before they call it.
func (w *wire) start() {
	go w.readLoop()
	go w.writeLoop()
}

// closeAfterQueued closes the connection with err once every frame queued
// before this call is written, so results of calls that have just finished
// still reach the peer.
func (w *wire) closeAfterQueued(err *chat.Error) {
	w.sendSoon(&frameBuf{closing: err})
}

// send queues f for writing. It gives up, releasing f, when ctx is done or
// the wire closes.
func (w *wire) send(done <-chan struct{}, f *frameBuf) error {
	select {
	case w.out <- f:
		return nil
	case <-w.closed:
		f.release()
		return w.err
	case <-done:
		f.release()
		return errGaveUp
	}
}

// errGaveUp is returned by send when its done channel fired first; callers
// report their own context error instead.
var errGaveUp = errors.New("rpc: gave up sending")

// sendSoon queues f without blocking the caller: the read goroutine uses it
// for the frames it must send (pong, cancel), because it must never wait on
// the writer.
func (w *wire) sendSoon(f *frameBuf) {
	select {
	case w.out <- f:
	default:
		go w.send(nil, f)
	}
}

// close ends the connection for reason err: it tells the peer with a close
// frame when it can, closes the socket, and runs onClose.
func (w *wire) close(err *chat.Error, closeCode int) {
	w.sayClose(err, closeCode)
	_ = w.ws.Close()
}

// sayClose marks the wire closed, runs onClose and sends the close frame,
// once; the socket stays open.
func (w *wire) sayClose(err *chat.Error, closeCode int) {
	w.closeOnce.Do(func() {
		w.err = err
		close(w.closed)
		// Fail pending calls first: the close frame below may wait on a
		// stuck writer for up to closeWait.
		if w.cfg.onClose != nil {
			w.cfg.onClose(err)
		}
		msg := websocket.FormatCloseMessage(closeCode, "")
		_ = w.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeWait))
	})
}

// awaitPeerClose holds the socket open, after a close frame that followed
// every queued frame, until the peer answers with its own close frame (its
// read goroutine then ends ours) or closeWait passes. Closing the socket at
// once would let a frame the peer sends meanwhile (a new call, a ping) meet
// a closed socket, and the reset that answers it can destroy what the peer
// has not read yet: the last frames of calls that had just finished.
func (w *wire) awaitPeerClose() {
	select {
	case <-w.readDone:
	case <-time.After(closeWait):
	}
	_ = w.ws.Close()
}

func (w *wire) deadPeerAfter() time.Duration { return w.cfg.pingInterval + w.cfg.pongTimeout }

func (w *wire) readLoop() {
	defer close(w.readDone)
	var buf bytes.Buffer
	for {
		// Any message proves the peer alive; the keepalive makes sure there
		// is one at least every ping interval.
		_ = w.ws.SetReadDeadline(time.Now().Add(w.deadPeerAfter()))
		_, r, err := w.ws.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			w.close(w.readError(err), websocket.CloseNormalClosure)
			return
		}
		if err := w.decode(buf.Bytes()); err != nil {
			w.cfg.log.Warn("closing connection: malformed frame", "peer", w.ws.RemoteAddr().String(), "error", err)
			w.close(chat.Errorf(chat.CodeUnavailable, "connection closed: %w", err), websocket.CloseInvalidFramePayloadData)
			return
		}
		if buf.Cap() > keepReadBuffer {
			buf = bytes.Buffer{}
		}
	}
}

// decode handles the frames in one message: one or more JSON objects, one
// per line.
func (w *wire) decode(msg []byte) error {
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var f frame
		if err := json.Unmarshal(line, &f); err != nil {
			return fmt.Errorf("decode frame: %w", err)
		}
		if f.Type == frameError {
			f.Err = new(chat.Error)
			if err := json.Unmarshal(line, f.Err); err != nil {
				return fmt.Errorf("decode error frame: %w", err)
			}
		}
		switch f.Type {
		case framePing:
			w.sendSoon(newFrame(framePong, 0).end())
		case framePong:
			// Reading it already moved the read deadline.
		default:
			w.cfg.dispatch(&f)
		}
	}
	return nil
}

// readError explains why reading stopped, as the error every pending call on
// this connection fails with.
func (w *wire) readError(err error) *chat.Error {
	var msg string
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		msg = fmt.Sprintf("connection closed: peer sent a message over the %d-byte frame limit", w.cfg.maxFrameBytes)
	case errors.As(err, &ce) && ce.Code == websocket.CloseMessageTooBig:
		msg = "connection closed by peer: a frame exceeded the peer's size limit"
	case errors.As(err, &ce):
		msg = fmt.Sprintf("connection closed by peer (%d %s)", ce.Code, ce.Text)
	case errors.As(err, &ne) && ne.Timeout():
		msg = fmt.Sprintf("connection lost: no frame from peer for %s (keepalive)", w.deadPeerAfter())
	default:
		msg = "connection lost: " + err.Error()
	}
	return chat.Wrap(err, chat.CodeUnavailable, msg)
}

func (w *wire) writeLoop() {
	ping := time.NewTicker(w.cfg.pingInterval)
	defer ping.Stop()
	var next *frameBuf
	for {
		if next == nil {
			select {
			case next = <-w.out:
			case <-ping.C:
				next = pingFrame
			case <-w.closed:
				return
			}
		}
		if next.closing != nil {
			w.sayClose(next.closing, websocket.CloseGoingAway)
			w.awaitPeerClose()
			return
		}
		var err error
		if next, err = w.writeBatch(next); err != nil {
			w.close(chat.Errorf(chat.CodeUnavailable, "connection lost: %w", err), websocket.CloseNormalClosure)
			return
		}
	}
}

// writeBatch writes first and then whatever else is already queued, as one
// WebSocket message of at most maxBatchBytes (or the one frame, if larger).
// Under load this turns many small frames into one write system call. It
// returns a dequeued frame that did not fit, to start the next message.
func (w *wire) writeBatch(first *frameBuf) (*frameBuf, error) {
	limit := min(int64(maxBatchBytes), w.cfg.maxFrameBytes)
	_ = w.ws.SetWriteDeadline(time.Now().Add(w.deadPeerAfter()))
	mw, err := w.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return nil, err
	}
	n := int64(len(first.b))
	_, err = mw.Write(first.b)
	releaseUnlessStatic(first)
	var leftover *frameBuf
	for err == nil && n < limit {
		var f *frameBuf
		select {
		case f = <-w.out:
		default:
		}
		if f == nil {
			break
		}
		if f.closing != nil || n+int64(len(f.b)) > limit {
			leftover = f
			break
		}
		n += int64(len(f.b))
		_, err = mw.Write(f.b)
		f.release()
	}
	if cerr := mw.Close(); err == nil {
		err = cerr
	}
	return leftover, err
}

func releaseUnlessStatic(f *frameBuf) {
	if f != pingFrame {
		f.release()
	}
}
