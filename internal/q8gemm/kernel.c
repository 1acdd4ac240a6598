// The Q8_0 matrix product with AVX-512 VNNI: C = A·Bᵀ for Q8_0 weights A
// (M rows of K) and F32 activations B (N rows of K), as ggml's MUL_MAT
// defines it, giving bit for bit what ggml's own kernel for batches
// (llamafile's tinyBLAS, on 256-bit registers) gives:
//
//   - B is quantized to Q8_0 as ggml-cpu quantizes it for this product
//     (quantize_row_q8_0's x86 path: scale amax/127 rounded to fp16,
//     values x·127/amax rounded to the nearest even integer);
//   - each 32-byte block's dot product is taken in 8 int32 lanes of 4
//     bytes each, exactly;
//   - per output, 8 float lanes accumulate the blocks in order, each
//     lane += (scale_a·scale_b)·lane's dot with one fused multiply-add;
//   - the 8 lanes are summed in tinyBLAS's order.
//
// So a batch gives every input the numbers ggml gives it, whatever the
// batch's size or make-up. The speed comes from doing two outputs' lanes
// per 512-bit instruction (two rows of A against one column of B) and from
// keeping per-block work out of the inner loop: vpdpbusd multiplies
// unsigned by signed bytes, so A is stored offset by 128 (XOR 0x80) and
// the excess, 128 times the sum of the 4 bytes of B in each lane, is
// subtracted in advance through the accumulator the instruction adds to
// (prepared once per block of B) — instead of tinyBLAS's sign and abs per
// product. A tile of rows of A is laid out this way in a scratch buffer
// first, then met by every column of B in turn.

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernel.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")

// q8_block is ggml's block_q8_0: an fp16 scale and 32 signed bytes.
typedef struct {
	uint16_t d;
	int8_t qs[32];
} q8_block;

// A tile is TILE_PAIRS pairs of rows of A; it meets TILE_N columns of B at
// a time (TILE_PAIRS·TILE_N accumulators). COLS_PER_CHUNK columns of B are
// reused across a thread's row tiles while they sit in the core's L2.
enum { TILE_PAIRS = Q8GEMM_TILE_ROWS / 2, TILE_M = Q8GEMM_TILE_ROWS, TILE_N = 4, COLS_PER_CHUNK = 256 };

static inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

// Quantizes rows [j0, j1) of B: per row, k bytes, a scale per block and,
// per lane of 4 bytes, -128 times their sum.
void q8gemm_prepare(const q8gemm_job *job, int64_t j0, int64_t j1) {
	const int64_t k = job->k, nb = k / 32;
	const __m512 sign = _mm512_set1_ps(-0.0f);
	const __m256i offset = _mm256_set1_epi8((char)0x80);
	for (int64_t j = j0; j < j1; j++) {
		const float *x = (const float *)((const char *)job->b + j * job->ldb_bytes);
		int8_t *qs = job->bq + j * k;
		float *d = job->bd + j * nb;
		int32_t *comp = job->bcomp + j * k / 4;
		for (int64_t b = 0; b < nb; b++) {
			__m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
			__m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1));
			const float amax = _mm512_reduce_max_ps(m);
			const uint16_t dh = _cvtss_sh(amax / 127.f, _MM_FROUND_TO_NEAREST_INT);
			const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.f / amax : 0.0f);
			__m512i q0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			__m512i q1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			__m256i q = _mm256_set_m128i(_mm512_cvtsepi32_epi8(q1), _mm512_cvtsepi32_epi8(q0));
			_mm256_storeu_si256((__m256i *)(qs + b * 32), q);
			d[b] = half_to_float(dh);
			// What vpdpbusd adds from A's offset, per lane.
			__m256i excess = _mm256_dpbusd_epi32(_mm256_setzero_si256(), offset, q);
			_mm256_storeu_si256((__m256i *)(comp + b * 8), _mm256_sub_epi32(_mm256_setzero_si256(), excess));
		}
	}
}

// A row tile as the inner loop reads it: per pair of rows and block, the
// two rows' 32 bytes offset by 128 side by side, and their two scales, 8
// lanes each. A missing second row (an odd last tile) is zeros.
typedef struct {
	int8_t *qs;   // TILE_PAIRS * nb * 64
	float *scale; // TILE_PAIRS * nb * 16
} row_tile;

static void load_rows(const q8gemm_job *job, int64_t i0, int rm, row_tile *t) {
	const int64_t nb = job->k / 32;
	const __m256i offset = _mm256_set1_epi8((char)0x80);
	for (int r = 0; r < TILE_M; r++) {
		const q8_block *row = r < rm ? (const q8_block *)((const char *)job->a + (i0 + r) * job->lda_bytes) : NULL;
		int8_t *qs = t->qs + (r / 2) * nb * 64 + (r % 2) * 32;
		float *sc = t->scale + (r / 2) * nb * 16 + (r % 2) * 8;
		for (int64_t b = 0; b < nb; b++) {
			__m256i q = row ? _mm256_loadu_si256((const __m256i *)row[b].qs) : _mm256_setzero_si256();
			_mm256_storeu_si256((__m256i *)(qs + b * 64), _mm256_xor_si256(q, offset));
			_mm256_storeu_ps(sc + b * 16, _mm256_set1_ps(row ? half_to_float(row[b].d) : 0.0f));
		}
	}
}

// sum8 adds 8 lanes as tinyBLAS's hsum does: the halves, then pairs.
static inline float sum8(__m256 v) {
	__m128 x = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
	x = _mm_add_ps(x, _mm_movehl_ps(x, x));
	x = _mm_add_ss(x, _mm_movehdup_ps(x));
	return _mm_cvtss_f32(x);
}

// tile computes the rows of PAIRS pairs from i0 (rm of them real) ×
// columns [j0, j0+RN) of C. PAIRS and RN are constants at every call site,
// so the loops unroll into registers.
static inline __attribute__((always_inline)) void tile(const q8gemm_job *job, const row_tile *t, int64_t i0, int rm, int64_t j0, const int PAIRS, const int RN) {
	const int64_t k = job->k, nb = k / 32;
	__m512 acc[TILE_PAIRS][TILE_N];
	for (int q = 0; q < PAIRS; q++)
		for (int c = 0; c < RN; c++)
			acc[q][c] = _mm512_setzero_ps();
	for (int64_t b = 0; b < nb; b++) {
		__m512i a[TILE_PAIRS];
		__m512 da[TILE_PAIRS];
		for (int q = 0; q < PAIRS; q++) {
			a[q] = _mm512_loadu_si512(t->qs + (q * nb + b) * 64);
			da[q] = _mm512_loadu_ps(t->scale + (q * nb + b) * 16);
		}
		for (int c = 0; c < RN; c++) {
			const int64_t j = j0 + c;
			const __m512i bq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(job->bq + j * k + b * 32)));
			const __m512i comp = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(job->bcomp + j * k / 4 + b * 8)));
			const __m512 db = _mm512_set1_ps(job->bd[j * nb + b]);
			for (int q = 0; q < PAIRS; q++) {
				const __m512i dot = _mm512_dpbusd_epi32(comp, a[q], bq);
				acc[q][c] = _mm512_fmadd_ps(_mm512_mul_ps(da[q], db), _mm512_cvtepi32_ps(dot), acc[q][c]);
			}
		}
	}
	for (int q = 0; q < PAIRS; q++)
		for (int c = 0; c < RN; c++) {
			float *out = job->c + (j0 + c) * job->ldc + i0 + 2 * q;
			out[0] = sum8(_mm512_castps512_ps256(acc[q][c]));
			if (2 * q + 1 < rm)
				out[1] = sum8(_mm512_extractf32x8_ps(acc[q][c], 1));
		}
}

// TILE_COLS runs the row tile at i (rm rows, PAIRS pairs) against columns
// [j0, j1).
#define TILE_COLS(PAIRS)                                                             \
	do {                                                                             \
		int64_t j = j0;                                                              \
		for (; j + TILE_N <= j1; j += TILE_N) tile(job, &t, i, rm, j, PAIRS, TILE_N); \
		switch (j1 - j) {                                                            \
		case 3: tile(job, &t, i, rm, j, PAIRS, 3); break;                            \
		case 2: tile(job, &t, i, rm, j, PAIRS, 2); break;                            \
		case 1: tile(job, &t, i, rm, j, PAIRS, 1); break;                            \
		}                                                                            \
	} while (0)

// Computes rows [i0, i1) of C (all its columns); scratch holds
// q8gemm_scratch_size(k) bytes.
void q8gemm_rows(const q8gemm_job *job, int64_t i0, int64_t i1, void *scratch) {
	const int64_t nb = job->k / 32;
	row_tile t = {.qs = scratch, .scale = (float *)((char *)scratch + TILE_PAIRS * nb * 64)};
	for (int64_t j0 = 0; j0 < job->n; j0 += COLS_PER_CHUNK) {
		const int64_t j1 = j0 + COLS_PER_CHUNK < job->n ? j0 + COLS_PER_CHUNK : job->n;
		for (int64_t i = i0; i < i1; i += TILE_M) {
			const int rm = i1 - i < TILE_M ? (int)(i1 - i) : TILE_M;
			load_rows(job, i, rm, &t);
			if (rm > 2)
				TILE_COLS(TILE_PAIRS);
			else // a last tile of one or two rows: one pair
				TILE_COLS(1);
		}
	}
}

size_t q8gemm_scratch_size(int64_t k) { return TILE_PAIRS * (k / 32) * (64 + 16 * sizeof(float)); }

#pragma GCC pop_options
