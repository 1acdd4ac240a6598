package q8gemm

// #include "q8gemm.h"
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/ollama/ollama/llama"
)

// Threadpool is a ggml CPU thread pool for one llama.cpp context, whose
// threads wait on a condition variable between graphs instead of spinning.
type Threadpool struct {
	tp   unsafe.Pointer
	lctx unsafe.Pointer
}

// AttachThreadpool gives lctx (created for seqs sequences on threads
// threads) a pool of its threads.
func AttachThreadpool(lctx *llama.Context, seqs, threads int) (*Threadpool, error) {
	// The llama package keeps the context's C pointer unexported, as its
	// first field.
	c := *(*unsafe.Pointer)(unsafe.Pointer(lctx))
	if c == nil || int(C.q8gemm_llama_n_threads(c)) != threads || int(C.q8gemm_llama_n_seq_max(c)) != seqs {
		return nil, fmt.Errorf("q8gemm: the llama package's Context is not laid out as expected")
	}
	tp := C.q8gemm_threadpool_new(C.int(threads))
	if tp == nil {
		return nil, fmt.Errorf("q8gemm: create a thread pool of %d threads", threads)
	}
	C.q8gemm_threadpool_attach(c, tp)
	return &Threadpool{tp: tp, lctx: c}, nil
}

// Free detaches the pool from its context and stops its threads.
func (p *Threadpool) Free() {
	C.q8gemm_threadpool_detach(p.lctx)
	C.q8gemm_threadpool_free(p.tp)
}
