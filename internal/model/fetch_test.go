package model

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fileServer serves data at any path over loopback HTTP, optionally
// honouring Range requests and misbehaving on its first response.
type fileServer struct {
	data   []byte
	ranges bool // answer Range requests with 206
	// first: what the first response does after firstBytes bytes:
	// "cut" drops the connection, "stall" stops sending.
	first      string
	firstBytes int

	mu       sync.Mutex
	requests []string // the Range header of each request ("" for none)
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.requests)
	s.requests = append(s.requests, r.Header.Get("Range"))
	s.mu.Unlock()

	body, status := s.data, http.StatusOK
	if rng := r.Header.Get("Range"); rng != "" && s.ranges {
		from, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rng, "bytes="), "-"))
		if err != nil || from >= len(s.data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(s.data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		body, status = s.data[from:], http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(s.data)-1, len(s.data)))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if n == 0 && s.first != "" {
		w.Write(body[:s.firstBytes])
		w.(http.Flusher).Flush()
		if s.first == "stall" {
			<-r.Context().Done()
		}
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
	w.Write(body)
}

func (s *fileServer) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// serve starts s on 127.0.0.1 and returns the URL of a model file on it.
func serve(t *testing.T, s *fileServer) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL + "/models/test-model.gguf"
}

// randomBytes returns n reproducible bytes and their sha256.
func randomBytes(n int) ([]byte, string) {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{1}).Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// testOptions are FetchOptions for a fresh cache directory, with short
// waits, logging into the test's output.
func testOptions(t *testing.T) FetchOptions {
	return FetchOptions{
		CacheDir:     t.TempDir(),
		Logger:       hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: testWriter{t}, Level: hclog.Debug}),
		StallTimeout: 200 * time.Millisecond,
		RetryDelay:   time.Millisecond,
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// cacheEntries lists the names in dir.
func cacheEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestFetchDownloadsOnceThenUsesCache(t *testing.T) {
	t.Parallel()
	data, sum := randomBytes(1 << 20)
	s := &fileServer{data: data, ranges: true}
	url := serve(t, s)
	opts := testOptions(t)
	src := Source{Ref: url, SHA256: sum, Size: int64(len(data))}

	path, err := Fetch(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Fatal("downloaded file differs from the served bytes")
	}
	if want := "test-model-" + sum[:16] + ".gguf"; filepath.Base(path) != want || filepath.Dir(path) != opts.CacheDir {
		t.Errorf("path = %s, want %s in %s", path, want, opts.CacheDir)
	}
	if names := cacheEntries(t, opts.CacheDir); len(names) != 1 {
		t.Errorf("cache holds %v, want only the model", names)
	}

	again, err := Fetch(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if again != path {
		t.Errorf("second Fetch = %s, want %s", again, path)
	}
	if n := len(s.log()); n != 1 {
		t.Errorf("server got %d requests, want 1 (the second Fetch must use the cache)", n)
	}
}

func TestFetchReplacesDamagedCachedFile(t *testing.T) {
	t.Parallel()
	data, sum := randomBytes(64 << 10)
	s := &fileServer{data: data}
	url := serve(t, s)
	opts := testOptions(t)
	src := Source{Ref: url, SHA256: sum}
	path, err := Fetch(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(context.Background(), src, opts); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Error("damaged cached file was not replaced")
	}
	if n := len(s.log()); n != 2 {
		t.Errorf("server got %d requests, want 2", n)
	}
}

// A file that does not verify is refused, named with expected and actual
// values, and nothing of it stays in the cache.
func TestFetchRefusesMismatch(t *testing.T) {
	t.Parallel()
	data, sum := randomBytes(256 << 10)
	_, otherSum := randomBytes(10)
	for _, tc := range []struct {
		name     string
		src      func(url string) Source
		wantErr  error
		wantText []string
	}{
		{"sha256", func(u string) Source { return Source{Ref: u, SHA256: otherSum} }, ErrChecksumMismatch,
			[]string{"expected " + otherSum, "got " + sum}},
		{"announced size", func(u string) Source { return Source{Ref: u, SHA256: sum, Size: 1000} }, ErrSizeMismatch,
			[]string{"expected 1000 bytes", fmt.Sprint(len(data))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := testOptions(t)
			_, err := Fetch(context.Background(), tc.src(serve(t, &fileServer{data: data})), opts)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			for _, s := range tc.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if names := cacheEntries(t, opts.CacheDir); len(names) != 0 {
				t.Errorf("cache holds %v after a refused download", names)
			}
		})
	}
}

// Interrupted and leftover downloads continue with a Range request where
// the server allows, and start over cleanly where it does not.
func TestFetchResumes(t *testing.T) {
	t.Parallel()
	data, sum := randomBytes(512 << 10)
	const cut = 100_000
	garbage := bytes.Repeat([]byte{0xAB}, cut+7)
	for _, tc := range []struct {
		name   string
		ranges bool   // the server supports Range
		first  string // what its first response does: "", "cut" or "stall"
		part   []byte // left over from an earlier run
		size   int64  // Source.Size
		want   []string
	}{
		{
			name:   "connection cut, range supported",
			ranges: true, first: "cut",
			want: []string{"", fmt.Sprintf("bytes=%d-", cut)},
		},
		{
			name:   "connection cut, no range support",
			ranges: false, first: "cut",
			want: []string{"", fmt.Sprintf("bytes=%d-", cut)}, // answered with 200
		},
		{
			name:   "stalled, range supported",
			ranges: true, first: "stall",
			want: []string{"", fmt.Sprintf("bytes=%d-", cut)},
		},
		{
			name:   "good part from an earlier run",
			ranges: true,
			part:   data[:cut],
			size:   int64(len(data)),
			want:   []string{fmt.Sprintf("bytes=%d-", cut)},
		},
		{
			name:   "damaged part: resume, mismatch, restart from zero",
			ranges: true,
			part:   garbage[:cut],
			want:   []string{fmt.Sprintf("bytes=%d-", cut), ""},
		},
		{
			name:   "part longer than the file: 416, restart from zero",
			ranges: true,
			part:   append(append([]byte(nil), data...), garbage...),
			want:   []string{fmt.Sprintf("bytes=%d-", len(data)+len(garbage)), ""},
		},
		{
			name:   "complete part from an earlier run: verified, no request",
			ranges: true,
			part:   data,
			size:   int64(len(data)),
			want:   nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &fileServer{data: data, ranges: tc.ranges, first: tc.first, firstBytes: cut}
			url := serve(t, s)
			opts := testOptions(t)
			src := Source{Ref: url, SHA256: sum, Size: tc.size}
			if tc.part != nil {
				u, _ := src.check()
				part := filepath.Join(opts.CacheDir, cacheName(u, sum)) + ".part"
				if err := os.WriteFile(part, tc.part, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			path, err := Fetch(context.Background(), src, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
				t.Fatal("downloaded file differs from the served bytes")
			}
			if got := s.log(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Range headers of the requests = %q, want %q", got, tc.want)
			}
			if names := cacheEntries(t, opts.CacheDir); len(names) != 1 {
				t.Errorf("cache holds %v, want only the model", names)
			}
		})
	}
}

// A cancelled download keeps its .part for the next run.
func TestFetchCancelledKeepsPart(t *testing.T) {
	t.Parallel()
	data, sum := randomBytes(256 << 10)
	url := serve(t, &fileServer{data: data, ranges: true, first: "stall", firstBytes: 1000})
	opts := testOptions(t)
	opts.StallTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Fetch(ctx, Source{Ref: url, SHA256: sum}, opts)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's deadline", err)
	}
	names := cacheEntries(t, opts.CacheDir)
	if len(names) != 1 || !strings.HasSuffix(names[0], ".part") {
		t.Errorf("cache holds %v, want one .part", names)
	}
}

// Sources that must be refused before any request.
func TestFetchRefusesSource(t *testing.T) {
	t.Parallel()
	_, sum := randomBytes(10)
	for _, tc := range []struct {
		name    string
		src     Source
		wantErr error
	}{
		{"URL without sha256", Source{Ref: "https://example.com/m.gguf"}, ErrChecksumRequired},
		{"plain http to a remote host", Source{Ref: "http://example.com/m.gguf", SHA256: sum}, ErrInsecureURL},
		{"plain http to a look-alike host", Source{Ref: "http://127.0.0.1.example.com/m.gguf", SHA256: sum}, ErrInsecureURL},
		{"malformed sha256", Source{Ref: "https://example.com/m.gguf", SHA256: "abc"}, nil},
		{"negative size", Source{Ref: "https://example.com/m.gguf", SHA256: sum, Size: -1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := testOptions(t)
			opts.HTTPClient = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				t.Errorf("unexpected request to %s", r.URL)
				return nil, errors.New("no requests expected")
			})}
			_, err := Fetch(context.Background(), tc.src, opts)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestFetchLocalPath(t *testing.T) {
	t.Parallel()
	data, sum := randomBytes(4096)
	_, otherSum := randomBytes(5)
	path := filepath.Join(t.TempDir(), "local.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		src     Source
		wantErr error
	}{
		{"no checksum", Source{Ref: path}, nil},
		{"right checksum", Source{Ref: path, SHA256: strings.ToUpper(sum)}, nil},
		{"wrong checksum", Source{Ref: path, SHA256: otherSum}, ErrChecksumMismatch},
		{"wrong size", Source{Ref: path, Size: 1}, ErrSizeMismatch},
		{"missing file", Source{Ref: path + ".missing"}, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Fetch(context.Background(), tc.src, testOptions(t))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != path {
				t.Fatalf("Fetch = %q, %v; want %q", got, err, path)
			}
		})
	}
}

func TestFetchLogsProgress(t *testing.T) {
	t.Parallel()
	data, sum := randomBytes(2 << 20)
	var logs bytes.Buffer
	opts := testOptions(t)
	opts.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	opts.Progress = &bytes.Buffer{} // not a terminal: progress goes to the log
	if _, err := Fetch(context.Background(), Source{Ref: serve(t, &fileServer{data: data}), SHA256: sum}, opts); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{"downloading", "percent=100", "total=\"2.0 MiB\"", "rate=", "eta=", "model downloaded"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	// One line at the start, then one per 10% at most (reads may skip steps).
	if n := strings.Count(out, "downloading"); n < 3 || n > 12 {
		t.Errorf("%d progress lines for one fast download; want one per 10%%", n)
	}
	if opts.Progress.(*bytes.Buffer).Len() != 0 {
		t.Error("progress was drawn on a writer that is not a terminal")
	}
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	p := &progress{total: 200 << 20, done: 50 << 20}
	if got, want := p.line(10<<20), " 50.0 MiB / 200.0 MiB   25%  10.0 MiB/s  ETA 15s"; " "+got != want {
		t.Errorf("line = %q, want %q", got, strings.TrimPrefix(want, " "))
	}
	p = &progress{done: 1536}
	if got, want := p.line(0), "1.5 KiB  0 B/s"; got != want {
		t.Errorf("line without a total = %q, want %q", got, want)
	}
}

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		DefaultSize: "278.0 MiB", 3 << 30: "3.0 GiB",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSourceDefaults(t *testing.T) {
	t.Parallel()
	for _, in := range []Source{{}, {Ref: DefaultURL}} {
		got := in.withDefaults()
		if got != DefaultSource() {
			t.Errorf("%+v.withDefaults() = %+v, want %+v", in, got, DefaultSource())
		}
		if _, err := got.check(); err != nil {
			t.Errorf("default source refused: %v", err)
		}
	}
	// A checksum given with the default URL (a mirror of it, say) is kept.
	if got := (Source{Ref: DefaultURL, SHA256: "AB"}).withDefaults(); got.SHA256 != "ab" || got.Size != 0 {
		t.Errorf("explicit checksum replaced: %+v", got)
	}
	u, _ := DefaultSource().check()
	if got, want := cacheName(u, DefaultSHA256), "gemma-3-270m-it-Q8_0-0ef57d2c838458a1.gguf"; got != want {
		t.Errorf("cache name = %q, want %q", got, want)
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv(CacheDirEnv, "/srv/models")
	if dir, err := DefaultCacheDir(); err != nil || dir != "/srv/models" {
		t.Errorf("DefaultCacheDir() = %q, %v; want $%s", dir, err, CacheDirEnv)
	}
	t.Setenv(CacheDirEnv, "")
	if dir, err := DefaultCacheDir(); err == nil && !strings.HasSuffix(dir, filepath.Join("slm-mesh", "models")) {
		t.Errorf("DefaultCacheDir() = %q, want it under the user cache dir", dir)
	}
}
