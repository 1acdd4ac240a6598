package rpc

import (
	"math"
	"testing"
	"time"
)

func TestCallTimeout(t *testing.T) {
	for _, tc := range []struct {
		ms   int64
		want time.Duration
		ok   bool
	}{
		{0, 0, false},
		{-5, 0, false},
		{1500, 1500 * time.Millisecond, true},
		{math.MaxInt64 / int64(time.Millisecond), time.Duration(math.MaxInt64/int64(time.Millisecond)) * time.Millisecond, true},
		{math.MaxInt64/int64(time.Millisecond) + 1, 0, false},
		{math.MaxInt64, 0, false},
	} {
		if got, ok := callTimeout(tc.ms); got != tc.want || ok != tc.ok {
			t.Errorf("callTimeout(%d) = %v, %v; want %v, %v", tc.ms, got, ok, tc.want, tc.ok)
		}
	}
}
