package engine

/*
// Declared here rather than included: cgo cannot point at the llama
// package's headers. They match llama.h and ggml.h (an enum ggml_log_level
// is passed as an int).
typedef void (*slm_log_callback)(int level, const char *text, void *user_data);
extern void llama_log_set(slm_log_callback callback, void *user_data);
extern void llama_backend_init(void);
extern const char *llama_print_system_info(void);

extern void slmLlamaLog(int level, char *text, void *user_data);
*/
import "C"

import (
	"bytes"
	"strings"
	"sync"
	"unsafe"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/q8gemm"
)

// initBackend starts llama.cpp, sends its log to log, logs the CPU
// features ggml was built with (AVX2, FMA, F16C, ... — a build without them
// is several times slower; see docs/build.md) and registers the Q8_0
// kernel for batches (internal/q8gemm) where the CPU runs it.
//
// The llama package sends llama.cpp's log to stderr when the process's
// default slog logger is enabled for its level, and llama.BackendInit
// reports the features through that logger. A library must not set the
// process's default logger, so the log callback is replaced by ours (one
// callback serves llama.cpp and ggml) and llama.cpp is started directly:
// the only other work of llama.BackendInit is loading backends from
// ollama's lib/ollama directory, which this CPU build does not have.
func initBackend(log hclog.Logger) {
	llamaLog.setLogger(log.Named("llama.cpp"))
	C.llama_log_set(C.slm_log_callback(C.slmLlamaLog), nil)
	C.llama_backend_init()
	features := backendFeatures(C.GoString(C.llama_print_system_info()))
	log.Info("llama.cpp backend ready", "features", features)
	if !hasFeatures(features, "AVX2") {
		log.Warn("ggml was built without AVX2: expect slow inference; build with CGO_CFLAGS=-march=x86-64-v3 (see docs/build.md)")
	}
	// The kernel gives what ggml's own kernel for batches gives only when
	// ggml was built with it (llamafile's tinyBLAS on AVX2 with FMA).
	if hasFeatures(features, "AVX2", "FMA", "F16C", "LLAMAFILE") && q8gemm.Register() {
		log.Info("Q8_0 matrix products of prompts and embeddings run on AVX-512 VNNI")
	}
}

// hasFeatures reports whether a backendFeatures list has each name =1.
func hasFeatures(features string, names ...string) bool {
	for _, n := range names {
		if !strings.Contains(" "+features+" ", " "+n+"=1 ") {
			return false
		}
	}
	return true
}

// backendFeatures turns llama_print_system_info's "CPU : SSE3 = 1 | AVX =
// 1 | " into "SSE3=1 AVX=1".
func backendFeatures(info string) string {
	var out []string
	for f := range strings.SplitSeq(info, "|") {
		if _, after, ok := strings.Cut(f, " : "); ok { // a backend's name starts its list
			f = after
		}
		name, value, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		out = append(out, strings.TrimSpace(name)+"="+strings.TrimSpace(value))
	}
	return strings.Join(out, " ")
}

// llamaLog receives llama.cpp's and ggml's log. Their log is process-wide,
// so it goes to the logger of the engine that started the backend.
var llamaLog logSink

//export slmLlamaLog
func slmLlamaLog(level C.int, text *C.char, _ unsafe.Pointer) {
	llamaLog.write(int(level), C.GoString(text))
}

// ggml's log levels (enum ggml_log_level).
const (
	ggmlLogDebug = 1
	ggmlLogInfo  = 2
	ggmlLogWarn  = 3
	ggmlLogError = 4
	ggmlLogCont  = 5 // more of the previous message
)

// logSink turns llama.cpp's log calls, which may carry part of a line or
// several, into one hclog entry per line. llama.cpp's info is detail for
// us (hundreds of lines per model load), so it is logged at debug level,
// and its debug at trace level; warnings and errors keep their level.
type logSink struct {
	mu    sync.Mutex
	log   hclog.Logger
	level int    // of the line being assembled
	line  []byte // text since the last newline
}

// setLogger sends what follows to log (nil: nowhere) and returns the
// logger it replaces.
func (s *logSink) setLogger(log hclog.Logger) hclog.Logger {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.log
	s.log = log
	return old
}

func (s *logSink) write(level int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if level != ggmlLogCont {
		s.flush()
		s.level = level
	}
	s.line = append(s.line, text...)
	for {
		i := bytes.IndexByte(s.line, '\n')
		if i < 0 {
			return
		}
		s.emit(string(s.line[:i]))
		s.line = s.line[i+1:]
	}
}

// flush logs an unfinished line.
func (s *logSink) flush() {
	if len(s.line) > 0 {
		s.emit(string(s.line))
		s.line = s.line[:0]
	}
}

func (s *logSink) emit(line string) {
	line = strings.TrimSpace(line)
	if line == "" || s.log == nil {
		return
	}
	switch s.level {
	case ggmlLogError:
		s.log.Error(line)
	case ggmlLogWarn:
		s.log.Warn(line)
	case ggmlLogInfo:
		s.log.Debug(line)
	default:
		s.log.Trace(line)
	}
}
