// An extra ggml backend that runs one operation: the matrix product of
// Q8_0 weights and a batch of F32 activations (kernel.c). llama.cpp adds
// every registered "accelerator" device to each context it creates, before
// the CPU, and ggml's scheduler gives an operation to the first backend
// that takes it; weights stay where they are (the device's buffer type is
// the CPU's), so nothing is copied. Everything else stays on the CPU.
//
// The interface is ggml's internal one (ggml-backend-impl.h), at the
// version of the ollama module go.mod pins (third_party/ggml holds its
// headers; a test checks they are the module's).

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-backend-impl.h"
#include "kernel.h"
#include "q8gemm.h"

// Fewer columns (a decode step) stay with ggml: handing them over, and
// laying out B and each tile of A, would cost more than the kernel saves;
// with 32 a pass neither gains nor loses (docs/PERFORMANCE.md). MAX_K
// bounds the scratch of a row tile.
enum { MIN_COLUMNS = 32, MAX_K = 1 << 16 };

static atomic_int enabled = 1;
static atomic_ullong products;

void q8gemm_set_enabled(int on) { atomic_store(&enabled, on); }
unsigned long long q8gemm_products(void) { return atomic_load(&products); }

// ---- a pool of threads that run one function at a time ----------------

typedef void (*task_fn)(void *arg, int ith, int nth);

typedef struct pool pool;
typedef struct {
	pool *p;
	int ith;
} worker_arg;

struct pool {
	int nth; // threads, the caller's included
	pthread_t *threads;
	worker_arg *args;
	pthread_mutex_t mu;
	pthread_cond_t wake, done;
	unsigned long gen; // counts the tasks handed out
	int running;       // workers still on the current task
	int quit;
	task_fn fn;
	void *arg;
};

static void *pool_worker(void *v) {
	worker_arg *w = v;
	pool *p = w->p;
	unsigned long seen = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->gen == seen && !p->quit)
			pthread_cond_wait(&p->wake, &p->mu);
		if (p->quit)
			break;
		seen = p->gen;
		task_fn fn = p->fn;
		void *arg = p->arg;
		pthread_mutex_unlock(&p->mu);
		fn(arg, w->ith, p->nth);
		pthread_mutex_lock(&p->mu);
		if (--p->running == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static void pool_free(pool *p) {
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->nth; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->done);
	free(p->threads);
	free(p->args);
	free(p);
}

static pool *pool_new(int nth) {
	pool *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->nth = nth;
	p->threads = calloc(nth, sizeof *p->threads);
	p->args = calloc(nth, sizeof *p->args);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	if (!p->threads || !p->args) {
		p->nth = 1;
		pool_free(p);
		return NULL;
	}
	for (int i = 1; i < nth; i++) {
		p->args[i] = (worker_arg){p, i};
		if (pthread_create(&p->threads[i], NULL, pool_worker, &p->args[i]) != 0) {
			p->nth = i; // join the ones started
			pool_free(p);
			return NULL;
		}
	}
	return p;
}

// pool_run runs fn(arg, ith, nth) on every thread, the caller's as ith 0,
// and returns when all have.
static void pool_run(pool *p, task_fn fn, void *arg) {
	if (p->nth > 1) {
		pthread_mutex_lock(&p->mu);
		p->fn = fn;
		p->arg = arg;
		p->running = p->nth - 1;
		p->gen++;
		pthread_cond_broadcast(&p->wake);
		pthread_mutex_unlock(&p->mu);
	}
	fn(arg, 0, p->nth);
	if (p->nth > 1) {
		pthread_mutex_lock(&p->mu);
		while (p->running > 0)
			pthread_cond_wait(&p->done, &p->mu);
		pthread_mutex_unlock(&p->mu);
	}
}

// ---- running products ----------------------------------------------------

// runner is a backend instance's state: its threads and buffers, grown as
// products need.
typedef struct {
	int n_threads; // asked for
	pool *pool;
	void *bbuf; // B quantized
	size_t bbuf_size;
	void **scratch; // a row tile per thread
	size_t scratch_size;
	int n_scratch;
	q8gemm_job job; // the product running
} runner;

static runner *runner_new(int n_threads) {
	runner *r = calloc(1, sizeof *r);
	if (r)
		r->n_threads = n_threads > 0 ? n_threads : 1;
	return r;
}

static void free_scratch(runner *r) {
	for (int i = 0; i < r->n_scratch; i++)
		free(r->scratch[i]);
	free(r->scratch);
	r->scratch = NULL;
	r->n_scratch = 0;
	r->scratch_size = 0;
}

static void runner_free(runner *r) {
	if (!r)
		return;
	pool_free(r->pool);
	free(r->bbuf);
	free_scratch(r);
	free(r);
}

static size_t align64(size_t n) { return (n + 63) / 64 * 64; }

// runner_reserve sizes threads and buffers for a product of n columns of k.
static int runner_reserve(runner *r, int64_t n, int64_t k) {
	if (!r->pool || r->pool->nth != r->n_threads) {
		pool_free(r->pool);
		r->pool = pool_new(r->n_threads);
		if (!r->pool)
			return 0;
	}
	const size_t need = align64(n * k) + align64(n * k / 32 * sizeof(float)) + align64(n * k / 4 * sizeof(int32_t));
	if (need > r->bbuf_size) {
		free(r->bbuf);
		r->bbuf = aligned_alloc(64, need);
		r->bbuf_size = r->bbuf ? need : 0;
		if (!r->bbuf)
			return 0;
	}
	const size_t scratch = align64(q8gemm_scratch_size(k));
	if (scratch > r->scratch_size || r->n_scratch != r->n_threads) {
		free_scratch(r);
		r->scratch = calloc(r->n_threads, sizeof *r->scratch);
		if (!r->scratch)
			return 0;
		r->n_scratch = r->n_threads;
		for (int i = 0; i < r->n_threads; i++)
			if (!(r->scratch[i] = aligned_alloc(64, scratch)))
				return 0;
		r->scratch_size = scratch;
	}
	char *base = r->bbuf;
	r->job.bq = (int8_t *)base;
	r->job.bd = (float *)(base + align64(n * k));
	r->job.bcomp = (int32_t *)(base + align64(n * k) + align64(n * k / 32 * sizeof(float)));
	return 1;
}

static void prepare_task(void *arg, int ith, int nth) {
	const q8gemm_job *job = &((runner *)arg)->job;
	q8gemm_prepare(job, job->n * ith / nth, job->n * (ith + 1) / nth);
}

static void rows_task(void *arg, int ith, int nth) {
	runner *r = arg;
	const int64_t t = Q8GEMM_TILE_ROWS, tiles = (r->job.m + t - 1) / t, lo = tiles * ith / nth * t, hi = tiles * (ith + 1) / nth * t;
	q8gemm_rows(&r->job, lo, hi < r->job.m ? hi : r->job.m, r->scratch[ith]);
}

// runner_multiply runs r->job (its a, b, c, sizes set) on r's threads.
static int runner_multiply(runner *r) {
	if (!runner_reserve(r, r->job.n, r->job.k))
		return 0;
	pool_run(r->pool, prepare_task, r);
	pool_run(r->pool, rows_task, r);
	atomic_fetch_add(&products, 1);
	return 1;
}

int q8gemm_multiply(const void *a, size_t lda_bytes, const float *b, size_t ldb_bytes, float *c, int64_t ldc,
                    int64_t m, int64_t n, int64_t k, int n_threads) {
	runner *r = runner_new(n_threads);
	if (!r)
		return 0;
	r->job = (q8gemm_job){.a = a, .lda_bytes = lda_bytes, .b = b, .ldb_bytes = ldb_bytes, .c = c, .ldc = ldc, .m = m, .n = n, .k = k};
	int ok = runner_multiply(r);
	runner_free(r);
	return ok;
}

// ---- the ggml backend ----------------------------------------------------

static const char *const NAME = "Q8-VNNI";

// takes reports whether the kernel can run op: a product of 2-D Q8_0
// weights in host memory and at least MIN_COLUMNS F32 columns, each
// contiguous.
static int takes(const struct ggml_tensor *op) {
	const struct ggml_tensor *a = op->src[0], *b = op->src[1];
	return op->op == GGML_OP_MUL_MAT && op->type == GGML_TYPE_F32 &&
	       a->type == GGML_TYPE_Q8_0 && b->type == GGML_TYPE_F32 &&
	       a->buffer && ggml_backend_buffer_is_host(a->buffer) &&
	       a->ne[0] % 32 == 0 && a->ne[0] >= 32 && a->ne[0] <= MAX_K && a->ne[2] == 1 && a->ne[3] == 1 &&
	       b->ne[0] == a->ne[0] && b->ne[1] >= MIN_COLUMNS && b->ne[2] == 1 && b->ne[3] == 1 &&
	       a->nb[0] == ggml_type_size(GGML_TYPE_Q8_0) && b->nb[0] == sizeof(float) &&
	       op->nb[0] == sizeof(float) && op->ne[0] == a->ne[1] && op->ne[1] == b->ne[1];
}

static const char *backend_name(ggml_backend_t backend) {
	(void)backend;
	return NAME;
}

static void backend_free(ggml_backend_t backend) {
	runner_free(backend->context);
	free(backend);
}

static enum ggml_status backend_graph_compute(ggml_backend_t backend, struct ggml_cgraph *graph, int batch_size) {
	(void)batch_size;
	runner *r = backend->context;
	for (int i = 0; i < ggml_graph_n_nodes(graph); i++) {
		struct ggml_tensor *node = ggml_graph_node(graph, i);
		switch (node->op) {
		case GGML_OP_NONE:
		case GGML_OP_RESHAPE:
		case GGML_OP_VIEW:
		case GGML_OP_PERMUTE:
		case GGML_OP_TRANSPOSE:
			continue; // views: no work
		case GGML_OP_MUL_MAT:
			if (takes(node))
				break;
			// fallthrough: never scheduled here
		default:
			return GGML_STATUS_FAILED;
		}
		const struct ggml_tensor *a = node->src[0], *b = node->src[1];
		r->job = (q8gemm_job){
			.a = a->data, .lda_bytes = a->nb[1],
			.b = b->data, .ldb_bytes = b->nb[1],
			.c = node->data, .ldc = (int64_t)(node->nb[1] / sizeof(float)),
			.m = a->ne[1], .n = b->ne[1], .k = a->ne[0],
		};
		if (!runner_multiply(r))
			return GGML_STATUS_ALLOC_FAILED;
	}
	return GGML_STATUS_SUCCESS;
}

static void set_n_threads(ggml_backend_t backend, int n_threads) {
	runner *r = backend->context;
	r->n_threads = n_threads > 0 ? n_threads : 1;
}

static struct ggml_backend_i backend_iface = {
	.get_name = backend_name,
	.free = backend_free,
	.graph_compute = backend_graph_compute,
};

static ggml_guid_t backend_guid(void) {
	static ggml_guid guid = {0x51, 0x38, 0x76, 0x6e, 0x6e, 0x69, 0x2d, 0x73, 0x6c, 0x6d, 0x2d, 0x6d, 0x65, 0x73, 0x68, 0x01};
	return &guid;
}

static const char *dev_name(ggml_backend_dev_t dev) {
	(void)dev;
	return NAME;
}

static const char *dev_description(ggml_backend_dev_t dev) {
	(void)dev;
	return "Q8_0 matrix products with AVX-512 VNNI";
}

static void dev_memory(ggml_backend_dev_t dev, size_t *free_mem, size_t *total) {
	(void)dev;
	*free_mem = 0;
	*total = 0;
}

static enum ggml_backend_dev_type dev_type(ggml_backend_dev_t dev) {
	(void)dev;
	return GGML_BACKEND_DEVICE_TYPE_ACCEL;
}

static void dev_props(ggml_backend_dev_t dev, struct ggml_backend_dev_props *props) {
	memset(props, 0, sizeof *props);
	props->name = dev_name(dev);
	props->description = dev_description(dev);
	props->type = dev_type(dev);
	props->caps.buffer_from_host_ptr = true;
}

static ggml_backend_t dev_init_backend(ggml_backend_dev_t dev, const char *params) {
	(void)params;
	ggml_backend_t backend = calloc(1, sizeof *backend);
	runner *r = runner_new(1);
	if (!backend || !r) {
		free(backend);
		runner_free(r);
		return NULL;
	}
	*backend = (struct ggml_backend){.guid = backend_guid(), .iface = backend_iface, .device = dev, .context = r};
	return backend;
}

static ggml_backend_buffer_type_t dev_buffer_type(ggml_backend_dev_t dev) {
	(void)dev;
	return ggml_backend_cpu_buffer_type();
}

static ggml_backend_buffer_t dev_buffer_from_host_ptr(ggml_backend_dev_t dev, void *ptr, size_t size, size_t max_tensor_size) {
	(void)dev;
	(void)max_tensor_size;
	return ggml_backend_cpu_buffer_from_ptr(ptr, size);
}

// The scheduler asks this of every operation of a graph it splits; a
// product already scheduled here runs even if switched off since.
static bool dev_supports_op(ggml_backend_dev_t dev, const struct ggml_tensor *op) {
	(void)dev;
	return atomic_load(&enabled) && takes(op);
}

static bool dev_supports_buft(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft) {
	(void)dev;
	return ggml_backend_buft_is_host(buft);
}

static const struct ggml_backend_device_i device_iface = {
	.get_name = dev_name,
	.get_description = dev_description,
	.get_memory = dev_memory,
	.get_type = dev_type,
	.get_props = dev_props,
	.init_backend = dev_init_backend,
	.get_buffer_type = dev_buffer_type,
	.buffer_from_host_ptr = dev_buffer_from_host_ptr,
	.supports_op = dev_supports_op,
	.supports_buft = dev_supports_buft,
};

static const char *reg_name(ggml_backend_reg_t reg) {
	(void)reg;
	return NAME;
}

static size_t reg_device_count(ggml_backend_reg_t reg) {
	(void)reg;
	return 1;
}

static struct ggml_backend_device device;

static ggml_backend_dev_t reg_device(ggml_backend_reg_t reg, size_t index) {
	(void)reg;
	return index == 0 ? &device : NULL;
}

static void *reg_proc_address(ggml_backend_reg_t reg, const char *name) {
	(void)reg;
	// llama.cpp sets every backend's threads to the context's before each
	// batch through this.
	return strcmp(name, "ggml_backend_set_n_threads") == 0 ? (void *)set_n_threads : NULL;
}

static struct ggml_backend_reg registration = {
	.api_version = GGML_BACKEND_API_VERSION,
	.iface = {
		.get_name = reg_name,
		.get_device_count = reg_device_count,
		.get_device = reg_device,
		.get_proc_address = reg_proc_address,
	},
};

int q8gemm_cpu_supported(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
	       __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c") &&
	       __builtin_cpu_supports("fma");
}

void q8gemm_register(void) {
	device = (struct ggml_backend_device){.iface = device_iface, .reg = &registration};
	ggml_backend_register(&registration);
}
