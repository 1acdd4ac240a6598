// A ggml CPU thread pool that sleeps between graphs (see threadpool.go).

#include "ggml.h"
#include "q8gemm.h"

// From ggml-cpu.h and llama.h at the pinned module version.
struct ggml_threadpool *ggml_threadpool_new(struct ggml_threadpool_params *params);
void ggml_threadpool_free(struct ggml_threadpool *threadpool);
struct llama_context;
void llama_attach_threadpool(struct llama_context *ctx, struct ggml_threadpool *threadpool, struct ggml_threadpool *threadpool_batch);
void llama_detach_threadpool(struct llama_context *ctx);
int32_t llama_n_threads(struct llama_context *ctx);
uint32_t llama_n_seq_max(const struct llama_context *ctx);

void *q8gemm_threadpool_new(int n_threads) {
	struct ggml_threadpool_params p = ggml_threadpool_params_default(n_threads);
	p.poll = 0; // idle workers wait on a condition variable, never spin
	return ggml_threadpool_new(&p);
}

void q8gemm_threadpool_free(void *tp) { ggml_threadpool_free(tp); }

void q8gemm_threadpool_attach(void *ctx, void *tp) { llama_attach_threadpool(ctx, tp, tp); }

void q8gemm_threadpool_detach(void *ctx) { llama_detach_threadpool(ctx); }

int q8gemm_llama_n_threads(void *ctx) { return llama_n_threads(ctx); }

int q8gemm_llama_n_seq_max(void *ctx) { return (int)llama_n_seq_max(ctx); }
