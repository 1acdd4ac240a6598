package engine

/*
#cgo CPPFLAGS: -I${SRCDIR}/../../third_party/ggml
void *slm_threadpool_attach(void *ctx, int n_threads, int n_seqs);
void slm_threadpool_detach(void *ctx, void *tp);
*/
import "C"

import (
	"fmt"
	"reflect"
	"unsafe"

	"github.com/ollama/ollama/llama"
)

// threadpool is the CPU threads of one llama.cpp context.
//
// Left alone, ggml starts the threads of every graph it computes on the
// CPU and joins them at its end; started threads spin while they wait for
// one another, and a new one can wait a scheduler slice for a CPU its
// siblings spin on. That is paid once per decode step (ggml with a pool of
// its own decodes ~18% more tokens per second here), and once per part of
// a graph the Q8_0 kernel (internal/q8gemm) splits into a few hundred
// parts — there it made a pass several times slower. This pool lives as
// long as the context and its idle threads sleep on a condition variable
// (poll 0), so they never take a CPU from the kernel's threads.
type threadpool struct {
	lctx, tp unsafe.Pointer
}

// attachThreadpool gives lctx, created for seqs sequences on threads
// threads, a pool of its threads.
func attachThreadpool(lctx *llama.Context, seqs, threads int) (*threadpool, error) {
	// The llama package keeps the context's C pointer unexported, as its
	// first field, c; the C side also checks the context's thread and
	// sequence counts.
	if f := reflect.TypeFor[llama.Context]().Field(0); f.Name != "c" || f.Offset != 0 || f.Type.Kind() != reflect.Pointer {
		return nil, fmt.Errorf("the llama package's Context does not start with its C pointer: update attachThreadpool")
	}
	c := *(*unsafe.Pointer)(unsafe.Pointer(lctx))
	if c == nil {
		return nil, fmt.Errorf("llama context without a C context")
	}
	tp := C.slm_threadpool_attach(c, C.int(threads), C.int(seqs))
	if tp == nil {
		return nil, fmt.Errorf("give the llama context a pool of %d threads: not the context created, or no threads", threads)
	}
	return &threadpool{lctx: c, tp: tp}, nil
}

// free detaches the pool from its context and stops its threads. The
// context must not compute again: its CPU backend keeps the pool's address
// (the llama package cannot free a context, and nothing here uses one
// after closing it).
func (p *threadpool) free() { C.slm_threadpool_detach(p.lctx, p.tp) }
