package model

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/backoff"
)

// CacheDirEnv names the environment variable that overrides the default
// cache directory.
const CacheDirEnv = "SLM_CACHE_DIR"

// FetchOptions configure Fetch. The zero value works.
type FetchOptions struct {
	// CacheDir holds downloaded models. Default: DefaultCacheDir().
	CacheDir string
	// Logger receives what Fetch does. Default: no logs.
	Logger hclog.Logger
	// Progress, when it is a terminal, shows a progress line that is
	// rewritten in place. Otherwise (or when nil) progress is logged every
	// 5 seconds or 10 percent, so that container logs stay readable.
	Progress io.Writer
	// HTTPClient makes the requests. Default: one with connect and response
	// header timeouts but no overall timeout, since a model takes a while.
	HTTPClient *http.Client
	// StallTimeout abandons (and then resumes) a download that receives no
	// bytes for this long. Default: 60s.
	StallTimeout time.Duration
	// RetryDelay bounds the wait before resuming an interrupted download;
	// it doubles after each failure, and each wait is a random point in
	// its upper half. Default: 1s.
	RetryDelay time.Duration
}

// maxRetries is how many times an interrupted download is resumed before
// Fetch gives up.
const maxRetries = 3

func (o *FetchOptions) setDefaults() {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
		}}
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
}

// DefaultCacheDir is $SLM_CACHE_DIR, else slm-mesh/models under the user's
// cache directory (~/.cache on Linux, ~/Library/Caches on macOS).
func DefaultCacheDir() (string, error) {
	if dir := os.Getenv(CacheDirEnv); dir != "" {
		return dir, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set %s): %w", CacheDirEnv, err)
	}
	return filepath.Join(dir, "slm-mesh", "models"), nil
}

// Fetch returns the path of the model file src names. A local path is
// returned as it is, after checking its size and sha256 when src gives
// them. A URL is downloaded into the cache directory, unless a cached copy
// with the right sha256 is already there; an interrupted download is
// resumed, on the next attempt or the next run, from its ".part" file.
// The file is renamed into place only once its sha256 matches, so a path
// returned by Fetch always holds exactly the pinned bytes.
func Fetch(ctx context.Context, src Source, opts FetchOptions) (string, error) {
	src = src.withDefaults()
	u, err := src.check()
	if err != nil {
		return "", err
	}
	opts.setDefaults()
	log := opts.Logger
	if u == nil {
		if err := verifyFile(src.Ref, src.Size, src.SHA256, log); err != nil {
			return "", err
		}
		log.Info("using local model", "path", src.Ref, "sha256_checked", src.SHA256 != "")
		return src.Ref, nil
	}

	if opts.CacheDir == "" {
		if opts.CacheDir, err = DefaultCacheDir(); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	// Services sharing a host share the cache: one downloads, the others
	// wait for it rather than writing the same .part file.
	unlock, err := lockDir(ctx, opts.CacheDir, log)
	if err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	defer unlock()

	final := filepath.Join(opts.CacheDir, cacheName(u, src.SHA256))
	log = log.With("url", redact(u), "path", final)
	if _, err := os.Stat(final); err == nil {
		err := verifyFile(final, src.Size, src.SHA256, log)
		if err == nil {
			log.Info("using cached model")
			return final, nil
		}
		log.Warn("cached model is damaged; downloading it again", "error", err)
		if err := os.Remove(final); err != nil {
			return "", fmt.Errorf("remove damaged cached model: %w", err)
		}
	}

	d := &download{
		url: u, want: src, final: final, part: final + ".part",
		client: opts.HTTPClient, log: log, progress: opts.Progress,
		stall: opts.StallTimeout,
	}
	if err := d.run(ctx, opts.RetryDelay); err != nil {
		return "", err
	}
	return final, nil
}

// cacheName is the file name of a download in the cache: the URL's file
// name, for people looking at the directory, and the start of the sha256,
// so that a different file behind the same name is a different entry.
func cacheName(u *url.URL, sha string) string {
	base := path.Base(u.Path)
	stem := strings.TrimSuffix(base, path.Ext(base))
	stem = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, stem)
	if strings.Trim(stem, "._") == "" {
		stem = "model"
	}
	return stem + "-" + sha[:16] + ".gguf"
}

// verifyFile checks a file's size and sha256 (each only when given).
func verifyFile(p string, size int64, sha string, log hclog.Logger) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("model %s: not a regular file", p)
	}
	if size > 0 && st.Size() != size {
		return fmt.Errorf("%w: %s: expected %d bytes, got %d", ErrSizeMismatch, p, size, st.Size())
	}
	if sha == "" {
		return nil
	}
	start := time.Now()
	got, err := sumOf(f)
	if err != nil {
		return fmt.Errorf("model %s: %w", p, err)
	}
	if got != sha {
		return fmt.Errorf("%w: %s: expected %s, got %s", ErrChecksumMismatch, p, sha, got)
	}
	log.Debug("sha256 verified", "path", p, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// FileSHA256 returns the sha256 of the file at path in hex, as
// -model-sha256 and a Source take it.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return sumOf(f)
}

// sumOf reads r to the end and returns its sha256 in hex.
func sumOf(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// download is one URL being fetched into part and then renamed to final.
type download struct {
	url         *url.URL
	want        Source
	part, final string
	client      *http.Client
	log         hclog.Logger
	progress    io.Writer
	stall       time.Duration
}

// errRestart marks a failure that a fresh download from byte zero may cure:
// the server refused the range, or the resumed file did not verify (the
// .part came from another file, or was damaged).
var errRestart = errors.New("restart download")

// errInterrupted marks a network failure worth resuming after a wait.
var errInterrupted = errors.New("download interrupted")

// errStalled is the cause given when no bytes arrived for StallTimeout.
var errStalled = errors.New("download stalled")

// run downloads until the file verifies, resuming after network failures
// up to maxRetries times and restarting from zero at most once.
func (d *download) run(ctx context.Context, delay time.Duration) error {
	restarted, retries := false, 0
	// No cap of its own: maxRetries ends the doubling.
	retry := backoff.New(delay, math.MaxInt64)
	for {
		err := d.attempt(ctx)
		switch {
		case err == nil:
			if err := os.Rename(d.part, d.final); err != nil {
				return fmt.Errorf("model cache: %w", err)
			}
			d.log.Info("model downloaded")
			return nil
		case ctx.Err() != nil:
			// The .part stays for the next run to resume.
			return fmt.Errorf("download %s: %w", redact(d.url), context.Cause(ctx))
		case errors.Is(err, errRestart) && !restarted:
			restarted = true
			d.log.Warn("restarting the download from the beginning", "reason", err)
			if err := os.Remove(d.part); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("model cache: %w", err)
			}
		case errors.Is(err, errInterrupted) && retries < maxRetries:
			retries++
			wait := retry.Next()
			d.log.Warn("download interrupted; resuming", "error", err, "retry", retries, "wait", wait)
			select {
			case <-ctx.Done():
				return fmt.Errorf("download %s: %w", redact(d.url), context.Cause(ctx))
			case <-time.After(wait):
			}
		default:
			// A file that failed verification is of no use for resuming.
			if errors.Is(err, ErrChecksumMismatch) || errors.Is(err, ErrSizeMismatch) {
				os.Remove(d.part)
			}
			return err
		}
	}
}

// attempt makes one request, continuing the .part file when there is one,
// and verifies the result.
func (d *download) attempt(ctx context.Context) error {
	f, err := os.OpenFile(d.part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("model cache: %w", err)
	}
	defer f.Close()

	// Hash what is already there, so the final sha256 covers the whole file.
	h := sha256.New()
	have, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("model cache: %w", err)
	}
	if d.want.Size > 0 && have > d.want.Size {
		return fmt.Errorf("%w: %s holds %d bytes, more than the expected %d", errRestart, d.part, have, d.want.Size)
	}
	// start is where this attempt's bytes begin; when it is not zero, the
	// file is a continuation of an earlier attempt.
	start := have
	if d.want.Size == 0 || have < d.want.Size {
		start, have, err = d.get(ctx, f, h, have)
		if err != nil {
			return err
		}
	}
	// fail turns a verification failure of a resumed file into a restart:
	// the bytes from the earlier attempt may be the bad ones.
	fail := func(err error) error {
		if start > 0 {
			return fmt.Errorf("%w: %w", errRestart, err)
		}
		return err
	}

	if d.want.Size > 0 && have != d.want.Size {
		return fail(fmt.Errorf("%w: %s: expected %d bytes, got %d", ErrSizeMismatch, redact(d.url), d.want.Size, have))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.want.SHA256 {
		return fail(fmt.Errorf("%w: %s: expected %s, got %s", ErrChecksumMismatch, redact(d.url), d.want.SHA256, got))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("model cache: %w", err)
	}
	return f.Close()
}

// get requests the bytes from offset have onwards (all of them when have
// is 0) and appends them to f and h. It returns the offset the server's
// bytes started at (0 when it ignored the range) and the new length of f.
func (d *download) get(ctx context.Context, f *os.File, h hash.Hash, have int64) (start, end int64, err error) {
	// The request is cancelled, with errStalled as the cause, when no byte
	// arrives for d.stall.
	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(d.stall, func() { cancel(errStalled) })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, d.url.String(), nil)
	if err != nil {
		return 0, 0, err
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %w", errInterrupted, err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusOK:
		if have > 0 {
			d.log.Info("server does not support resuming; downloading from the beginning", "had", have)
		}
		if err := f.Truncate(0); err != nil {
			return 0, 0, fmt.Errorf("model cache: %w", err)
		}
		h.Reset()
		have = 0
	case resp.StatusCode == http.StatusPartialContent:
		if want := fmt.Sprintf("bytes %d-", have); !strings.HasPrefix(resp.Header.Get("Content-Range"), want) {
			return 0, 0, fmt.Errorf("%w: asked for %q, server sent Content-Range %q", errRestart, want, resp.Header.Get("Content-Range"))
		}
		d.log.Info("resuming download", "from", have)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return 0, 0, fmt.Errorf("%w: server refused to resume from byte %d (416)", errRestart, have)
	case resp.StatusCode >= 500:
		return 0, 0, fmt.Errorf("%w: %s: %s", errInterrupted, redact(d.url), resp.Status)
	default:
		return 0, 0, fmt.Errorf("download %s: %s", redact(d.url), resp.Status)
	}
	if d.want.Size > 0 && resp.ContentLength >= 0 && have+resp.ContentLength != d.want.Size {
		return 0, 0, fmt.Errorf("%w: %s: expected %d bytes, server announces %d", ErrSizeMismatch, redact(d.url), d.want.Size, have+resp.ContentLength)
	}
	start = have
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return 0, 0, fmt.Errorf("model cache: %w", err)
	}

	total := d.want.Size
	if total == 0 && resp.ContentLength >= 0 {
		total = have + resp.ContentLength
	}
	p := newProgress(filepath.Base(d.final), have, total, d.progress, d.log)
	defer p.finish()

	w := io.MultiWriter(f, h)
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			watchdog.Reset(d.stall)
			if _, err := w.Write(buf[:n]); err != nil {
				return 0, 0, fmt.Errorf("model cache: %w", err)
			}
			have += int64(n)
			p.set(have)
		}
		if rerr == io.EOF {
			return start, have, nil
		}
		if rerr != nil {
			if errors.Is(context.Cause(reqCtx), errStalled) {
				rerr = fmt.Errorf("no data for %s: %w", d.stall, errStalled)
			}
			return 0, 0, fmt.Errorf("%w after %d bytes: %w", errInterrupted, have, rerr)
		}
	}
}
