package q8gemm

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestMultiply checks the kernel against two products in Go from ggml's
// integers: B quantized per block of 32 as ggml-cpu does it on x86 (scale
// amax/127 rounded to fp16, values x·127/amax rounded to the nearest even
// integer). One follows ggml's batch kernel (tinyBLAS) float operation by
// float operation, and the kernel must equal it bit for bit; the other
// sums in float64 and bounds the first. Shapes cover a tile's remainders
// in rows and columns, more columns than one chunk, and one to three
// threads.
func TestMultiply(t *testing.T) {
	if !Supported() {
		t.Skip("this CPU has no AVX-512 VNNI: the backend is not registered here")
	}
	for _, s := range []struct{ m, n, k, threads int }{
		{4, 4, 64, 1},
		{7, 5, 96, 2},
		{1, 1, 32, 1},
		{13, 300, 64, 3},
		{64, 33, 1152, 2},
		{1152, 40, 768, 2},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d-threads-%d", s.m, s.n, s.k, s.threads), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(s.m), uint64(s.n*s.k)))
			a := randomQ8(rng, s.m, s.k)
			b := make([]float32, s.n*s.k)
			for i := range b {
				b[i] = float32(rng.NormFloat64())
			}
			// A block of zeros (scale 0), and a row of large values.
			clear(b[:32])
			for i := range s.k {
				b[(s.n-1)*s.k+i] *= 1000
			}
			c := make([]float32, s.n*s.m)
			if err := Multiply(a, b, c, s.m, s.n, s.k, s.threads); err != nil {
				t.Fatal(err)
			}
			ggml, exact, bound := reference(a, b, s.m, s.n, s.k)
			for j := range s.n {
				for i := range s.m {
					e := j*s.m + i
					if c[e] != ggml[e] {
						t.Fatalf("c[%d][%d] = %g, ggml's kernel gives %g", j, i, c[e], ggml[e])
					}
					if d := math.Abs(float64(ggml[e]) - exact[e]); d > 1e-5*bound[e] {
						t.Fatalf("c[%d][%d] = %g, the exact sum is %g (Σ|products| %g)", j, i, ggml[e], exact[e], bound[e])
					}
				}
			}
		})
	}
}

func TestMultiplyRefusesBadShapes(t *testing.T) {
	if err := Multiply(make([]byte, 34), make([]float32, 31), make([]float32, 1), 1, 1, 31, 1); err == nil {
		t.Fatal("k = 31 accepted")
	}
	if err := Multiply(make([]byte, 34), make([]float32, 32), make([]float32, 2), 1, 1, 32, 1); err == nil {
		t.Fatal("a c of the wrong size accepted")
	}
}

// randomQ8 returns m rows of k/32 Q8_0 blocks with random scales and
// values.
func randomQ8(rng *rand.Rand, m, k int) []byte {
	a := make([]byte, 0, m*k/32*34)
	for range m * k / 32 {
		a = binary.LittleEndian.AppendUint16(a, floatToHalf(float32(0.001+0.02*rng.Float64())))
		for range 32 {
			a = append(a, byte(int8(rng.IntN(255)-127)))
		}
	}
	return a
}

// reference returns the product as ggml's batch kernel computes it (per
// output 8 float32 lanes, each adding its 4 bytes' integer dot product
// times the blocks' scales with one fused multiply-add, block after block,
// then summed as (l0+l4 + l2+l6) + (l1+l5 + l3+l7)), the product summed
// in float64, and per output the sum of its products' magnitudes.
func reference(a []byte, b []float32, m, n, k int) (ggml []float32, exact, bound []float64) {
	ggml, exact, bound = make([]float32, n*m), make([]float64, n*m), make([]float64, n*m)
	nb := k / 32
	for j := range n {
		bq, bd := quantize(b[j*k : (j+1)*k])
		for i := range m {
			var lanes [8]float32
			for blk := range nb {
				off := (i*nb + blk) * 34
				s := halfToFloat(binary.LittleEndian.Uint16(a[off:])) * bd[blk]
				for l := range lanes {
					dot, abs := int32(0), int32(0)
					for e := 4 * l; e < 4*l+4; e++ {
						p := int32(int8(a[off+2+e])) * int32(bq[blk*32+e])
						dot += p
						abs += max(p, -p)
					}
					lanes[l] = float32(math.FMA(float64(s), float64(dot), float64(lanes[l])))
					exact[j*m+i] += float64(s) * float64(dot)
					bound[j*m+i] += float64(s) * float64(abs)
				}
			}
			var x [4]float32
			for l := range x {
				x[l] = lanes[l+4] + lanes[l]
			}
			ggml[j*m+i] = (x[0] + x[2]) + (x[1] + x[3])
		}
	}
	return ggml, exact, bound
}

// quantize is ggml-cpu's quantize_row_q8_0 on x86: per block of 32, the
// scale amax/127 stored as fp16, the values x·(127/amax) rounded to the
// nearest (even) integer.
func quantize(x []float32) (q []int8, d []float32) {
	for b := 0; b < len(x); b += 32 {
		var amax float32
		for _, v := range x[b : b+32] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d = append(d, halfToFloat(floatToHalf(amax/127)))
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		for _, v := range x[b : b+32] {
			q = append(q, int8(math.RoundToEven(float64(v*id))))
		}
	}
	return q, d
}

// floatToHalf rounds f to the nearest fp16 (ties to even); f must be zero
// or within fp16's normal range, as every scale here is.
func floatToHalf(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	if bits&0x7fffffff == 0 {
		return sign
	}
	exp := int(bits>>23&0xff) - 127 + 15
	if exp <= 0 || exp >= 31 {
		panic(fmt.Sprintf("floatToHalf(%g): outside fp16's normal range", f))
	}
	mant := bits & 0x7fffff
	h := uint32(exp)<<10 | mant>>13
	rest := mant & 0x1fff
	if rest > 0x1000 || rest == 0x1000 && h&1 == 1 {
		h++ // may carry into the exponent, which is right
	}
	return sign | uint16(h)
}

func halfToFloat(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h >> 10 & 0x1f)
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		return float32(math.Copysign(float64(mant)*math.Pow(2, -24), float64(int32(sign)|1)))
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// BenchmarkMultiply measures the kernel alone on EmbeddingGemma-300m's
// largest products (768 → 1152 and back) for a pass of 512 tokens, on 2
// threads; ggml's own kernel on the same products is in the engine's
// benchmarks (SLM_BENCH_Q8GEMM=off):
//
//	go test -run '^$' -bench Multiply ./internal/q8gemm/
func BenchmarkMultiply(b *testing.B) {
	if !Supported() {
		b.Skip("this CPU has no AVX-512 VNNI")
	}
	for _, s := range []struct{ m, k int }{{1152, 768}, {768, 1152}} {
		const n = 512
		b.Run(fmt.Sprintf("%dx%d-by-%d", s.m, s.k, n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			a := randomQ8(rng, s.m, s.k)
			x := make([]float32, n*s.k)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			c := make([]float32, n*s.m)
			for b.Loop() {
				if err := Multiply(a, x, c, s.m, n, s.k, 2); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(2*float64(s.m*s.k*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOPS")
		})
	}
}
