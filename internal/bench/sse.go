package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// maxEventBytes bounds one server-sent event; a completion chunk is a few
// hundred bytes.
const maxEventBytes = 1 << 20

// errDone stops ReadSSE at the "[DONE]" sentinel.
var errDone = errors.New("done")

// ReadSSE reads server-sent events from r and calls fn with the data of
// each event (multi-line data joined with "\n"), until the stream ends, the
// OpenAI "[DONE]" sentinel arrives, or fn returns an error, which ReadSSE
// returns. Comments, event names and ids are ignored.
func ReadSSE(r io.Reader, fn func(data []byte) error) error {
	_, err := ReadEvents(r, fn)
	return err
}

// ReadEvents is ReadSSE that also reports whether the stream ended with the
// "[DONE]" sentinel, which a client checking the server needs to know: a
// stream cut short ends without it.
func ReadEvents(r io.Reader, fn func(data []byte) error) (done bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventBytes)
	var data []byte
	have := false
	dispatch := func() error {
		if !have {
			return nil
		}
		d := data
		data, have = data[:0], false
		if string(d) == "[DONE]" {
			return errDone
		}
		return fn(d)
	}
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if err := dispatch(); err != nil {
				return ignoreDone(err)
			}
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		if string(field) != "data" {
			continue // comment (": ping"), event:, id:, retry:
		}
		value = bytes.TrimPrefix(value, []byte(" "))
		if have {
			data = append(data, '\n')
		}
		data, have = append(data, value...), true
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read event stream: %w", err)
	}
	// A stream that ends without a blank line still delivers its last event.
	return ignoreDone(dispatch())
}

// ignoreDone turns the [DONE] sentinel into a clean end.
func ignoreDone(err error) (done bool, _ error) {
	if errors.Is(err, errDone) {
		return true, nil
	}
	return false, err
}
