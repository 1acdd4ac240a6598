// Package q8gemm runs llama.cpp's matrix products of Q8_0 weights and a
// batch of activations (a prompt, a pass of embeddings) with AVX-512 VNNI,
// 1.7–1.8 times as fast as ggml's own kernel for them, on a CPU that has it
// (docs/PERFORMANCE.md, "Q8_0 products with AVX-512 VNNI"). It is an extra
// ggml backend: once registered, every llama.cpp context created
// afterwards hands it those products and keeps everything else — decode
// steps of a few tokens included — on ggml's CPU backend. Its results are
// bit for bit those of ggml's kernel (kernel.c says how), so a batch gives
// every input what it gets alone.
package q8gemm

/*
#cgo CPPFLAGS: -I${SRCDIR}/../../third_party/ggml
#cgo LDFLAGS: -lpthread
#include "q8gemm.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	_ "github.com/ollama/ollama/llama" // ggml's backend registry, which the C code calls
)

var (
	once       sync.Once
	registered atomic.Bool
)

// Register adds the backend to ggml's registry, once per process, if this
// CPU has AVX-512 VNNI (and the AVX-512 subsets the kernel uses), and
// reports whether it is registered. Call it after llama.cpp's backend is
// initialised and before the contexts that should use it are created.
func Register() bool {
	once.Do(func() {
		if C.q8gemm_cpu_supported() != 0 {
			C.q8gemm_register()
			registered.Store(true)
		}
	})
	return registered.Load()
}

// Registered reports whether Register has added the backend, without
// adding it.
func Registered() bool { return registered.Load() }

// SetEnabled turns the backend's products on or off (on by default), so
// that a benchmark or a test can compare it with ggml's kernels in one
// process. It applies to the graphs llama.cpp builds from now on; a context
// may reuse a graph it built before, so switch before opening the contexts
// to compare.
func SetEnabled(on bool) {
	v := C.int(0)
	if on {
		v = 1
	}
	C.q8gemm_set_enabled(v)
}

// Products returns how many matrix products the backend has run in this
// process.
func Products() uint64 { return uint64(C.q8gemm_products()) }

// Supported reports whether this CPU can run the kernel.
func Supported() bool { return C.q8gemm_cpu_supported() != 0 }

// Multiply computes c = a·bᵀ with the kernel on threads threads, as the
// backend does for a MUL_MAT: a holds m rows of k/32 Q8_0 blocks (34 bytes
// each: an fp16 scale, 32 signed bytes), b n rows of k floats, c n rows of
// m floats. It is the kernel without ggml, for tests and benchmarks; the
// caller checks Supported first.
func Multiply(a []byte, b, c []float32, m, n, k, threads int) error {
	switch {
	case k%32 != 0 || k < 32 || m < 1 || n < 1:
		return fmt.Errorf("q8gemm: %d×%d by %d×%d: k must be a positive multiple of 32", m, k, n, k)
	case len(a) != m*k/32*34 || len(b) != n*k || len(c) != n*m:
		return fmt.Errorf("q8gemm: buffers of %d, %d, %d elements for %d×%d by %d×%d", len(a), len(b), len(c), m, k, n, k)
	}
	ok := C.q8gemm_multiply(unsafe.Pointer(&a[0]), C.size_t(k/32*34), (*C.float)(&b[0]), C.size_t(k*4),
		(*C.float)(&c[0]), C.int64_t(m), C.int64_t(m), C.int64_t(n), C.int64_t(k), C.int(threads))
	if ok == 0 {
		return fmt.Errorf("q8gemm: out of memory")
	}
	return nil
}
