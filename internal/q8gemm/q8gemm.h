// What q8gemm.go calls.
#ifndef SLM_Q8GEMM_H
#define SLM_Q8GEMM_H

#include <stddef.h>
#include <stdint.h>

int q8gemm_cpu_supported(void);
void q8gemm_register(void);
void q8gemm_set_enabled(int on);
unsigned long long q8gemm_products(void);
int q8gemm_multiply(const void *a, size_t lda_bytes, const float *b, size_t ldb_bytes, float *c, int64_t ldc,
                    int64_t m, int64_t n, int64_t k, int n_threads);

#endif
