// A ggml CPU thread pool for a llama.cpp context (threads.go).

#include "ggml.h"

// From ggml-cpu.h and llama.h at the pinned module version.
struct ggml_threadpool *ggml_threadpool_new(struct ggml_threadpool_params *params);
void ggml_threadpool_free(struct ggml_threadpool *threadpool);
struct llama_context;
void llama_attach_threadpool(struct llama_context *ctx, struct ggml_threadpool *threadpool, struct ggml_threadpool *threadpool_batch);
void llama_detach_threadpool(struct llama_context *ctx);
int32_t llama_n_threads(struct llama_context *ctx);
uint32_t llama_n_seq_max(const struct llama_context *ctx);

void *slm_threadpool_attach(void *ctx, int n_threads, int n_seqs) {
	if (llama_n_threads(ctx) != n_threads || (int)llama_n_seq_max(ctx) != n_seqs)
		return NULL;
	struct ggml_threadpool_params p = ggml_threadpool_params_default(n_threads);
	p.poll = 0; // idle threads wait on a condition variable, never spin
	struct ggml_threadpool *tp = ggml_threadpool_new(&p);
	if (tp)
		llama_attach_threadpool(ctx, tp, tp);
	return tp;
}

void slm_threadpool_detach(void *ctx, void *tp) {
	llama_detach_threadpool(ctx);
	ggml_threadpool_free(tp);
}
