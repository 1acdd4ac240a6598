// The Q8_0 × F32 matrix product of kernel.c, apart from ggml so that its
// tests can call it directly.
#ifndef SLM_Q8GEMM_KERNEL_H
#define SLM_Q8GEMM_KERNEL_H

#include <stddef.h>
#include <stdint.h>

// q8gemm_job is one product: c[j*ldc + i] = Σ a[i]·b[j] for i < m, j < n,
// over k elements (a multiple of 32), with B quantized into bq/bd/bcomp
// by q8gemm_prepare first.
typedef struct {
	const void *a;     // m rows of k/32 Q8_0 blocks
	size_t lda_bytes;  // from one row of a to the next
	const float *b;    // n rows of k floats
	size_t ldb_bytes;  // from one row of b to the next
	float *c;          // n rows of m floats
	int64_t ldc;       // floats from one row of c to the next
	int64_t m, n, k;
	int8_t *bq;        // n × k bytes
	float *bd;         // n × k/32 scales
	int32_t *bcomp;    // n × k/4 compensations
} q8gemm_job;

// Rows of A a thread's share of a product is best a multiple of: one
// tile's (kernel.c).
#define Q8GEMM_TILE_ROWS 4

size_t q8gemm_scratch_size(int64_t k);
void q8gemm_prepare(const q8gemm_job *job, int64_t j0, int64_t j1);
void q8gemm_rows(const q8gemm_job *job, int64_t i0, int64_t i1, void *scratch);

#endif
