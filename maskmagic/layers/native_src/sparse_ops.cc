// maskmagic's native sparse kernel: y = x @ W for W given by its connections, and its gradients.
//
// W is an (n_in, units) matrix with W[rows[k], cols[k]] = values[k]; rows are sorted (row-major
// order of the connections). Activations are transposed, a tile or a block at a time, into
// (features, batch) scratch so that every connection is a contiguous batch-long axpy or dot,
// which the compiler vectorises, and the scratch stays in cache. Every output element is summed
// by one thread in a fixed order (no atomics), so results are bit-identical from run to run.
//
// Three ops: the forward product, the values gradient and the input gradient, the last separate
// so that TensorFlow prunes it where nothing reads dx.
//
// Built by maskmagic/layers/native.py with the installed TensorFlow's compile and link flags.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

// Tiles of the transpose: few enough source rows that their cache lines do not collide in L1
// when the row length is a power of two.
constexpr int64_t kTileRows = 8, kTileCols = 64;

// out[0:n, 0:m] (leading dimension ld_out) = transpose of in[0:m, 0:n] (leading dimension ld_in).
template <typename T>
inline void TransposeTile(const T* in, int64_t ld_in, int64_t m, int64_t n, T* out,
                          int64_t ld_out) {
  for (int64_t c = 0; c < n; ++c)
    for (int64_t r = 0; r < m; ++r) out[c * ld_out + r] = in[r * ld_in + c];
}

#ifdef __AVX2__
// The 8 x 8 float case in AVX registers (pure data movement: the same bits as the loop above).
inline void Transpose8x8(const float* in, int64_t ld_in, float* out, int64_t ld_out) {
  __m256 r[8], t[8], s[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(in + i * ld_in);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0-3, then rows 4-7 of the input
    const __m256 *a = t + 4 * h;
    s[4 * h + 0] = _mm256_shuffle_ps(a[0], a[2], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * h + 1] = _mm256_shuffle_ps(a[0], a[2], _MM_SHUFFLE(3, 2, 3, 2));
    s[4 * h + 2] = _mm256_shuffle_ps(a[1], a[3], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * h + 3] = _mm256_shuffle_ps(a[1], a[3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out + i * ld_out, _mm256_permute2f128_ps(s[i], s[4 + i], 0x20));
    _mm256_storeu_ps(out + (i + 4) * ld_out, _mm256_permute2f128_ps(s[i], s[4 + i], 0x31));
  }
}

template <>
inline void TransposeTile<float>(const float* in, int64_t ld_in, int64_t m, int64_t n,
                                 float* out, int64_t ld_out) {
  if (m != 8) {
    for (int64_t c = 0; c < n; ++c)
      for (int64_t r = 0; r < m; ++r) out[c * ld_out + r] = in[r * ld_in + c];
    return;
  }
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) Transpose8x8(in + c, ld_in, out + c * ld_out, ld_out);
  for (; c < n; ++c)
    for (int64_t r = 0; r < m; ++r) out[c * ld_out + r] = in[r * ld_in + c];
}
#endif

// out (cols x rows) = transpose of in (rows x cols), in parallel over tiles of columns.
template <typename T>
void Transpose(OpKernelContext* ctx, const T* in, int64_t rows, int64_t cols, T* out) {
  if (rows == 0 || cols == 0) return;
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t blocks = (cols + kTileCols - 1) / kTileCols;
  tensorflow::Shard(
      workers->num_threads, workers->workers, blocks, rows * kTileCols * 2,
      [&](int64_t b0, int64_t b1) {
        for (int64_t c0 = b0 * kTileCols; c0 < std::min(cols, b1 * kTileCols); c0 += kTileCols) {
          const int64_t n = std::min(cols, c0 + kTileCols) - c0;
          for (int64_t r0 = 0; r0 < rows; r0 += kTileRows)
            TransposeTile<T>(in + r0 * cols + c0, cols, std::min(kTileRows, rows - r0), n,
                             out + c0 * rows + r0, rows);
        }
      });
}

// A 32-byte vector of T (GCC/Clang vector extension: AVX registers with -mavx2, pairs of SSE
// registers without), loaded and stored unaligned.
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int kLanes = 32 / sizeof(T);
  static inline type Load(const T* p) {
    type v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
  }
  static inline void Store(T* p, type v) { __builtin_memcpy(p, &v, sizeof(v)); }
};

// How many connections ahead the loops below prefetch the rows they will read: the rows are
// scattered, so without it every connection waits for memory.
constexpr int64_t kAhead = 12;

// Prefetches `bytes` bytes from p (one hint per 64-byte cache line).
inline void Prefetch(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b);
}

// sum_j a[j] * b[j]: two vectors of partial sums, then the lanes and the tail in a fixed order.
template <typename T>
inline T Dot(const T* a, const T* b, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  typename V::type acc0{}, acc1{};
  int64_t j = 0;
  for (; j + 2 * L <= n; j += 2 * L) {
    acc0 += V::Load(a + j) * V::Load(b + j);
    acc1 += V::Load(a + j + L) * V::Load(b + j + L);
  }
  for (; j + L <= n; j += L) acc0 += V::Load(a + j) * V::Load(b + j);
  acc0 += acc1;
  T total = 0;
  for (int l = 0; l < L; ++l) total += acc0[l];
  for (; j < n; ++j) total += a[j] * b[j];
  return total;
}

// Input rows per block of the products below.
constexpr int64_t kRowBlock = 512;

// A cache-line aligned scratch array of zeros, freed on scope exit. Lanes of a tile past the
// batch's last row hold leftovers of the previous tile; nothing reads them into an output.
template <typename T>
struct Scratch {
  explicit Scratch(int64_t n)
      : data(static_cast<T*>(std::aligned_alloc(64, ((n * sizeof(T) + 63) / 64) * 64))) {
    std::fill(data, data + n, T(0));
  }
  ~Scratch() { std::free(data); }
  T* data;
};

// out[c, r] (leading dimension ld_out) = in[r, c] for r < m, c < n (in has leading dimension
// ld_in), eight rows of in at a time (the AVX 8 x 8 path).
template <typename T>
void TransposeRows(const T* in, int64_t ld_in, int64_t m, int64_t n, T* out, int64_t ld_out) {
  for (int64_t r0 = 0; r0 < m; r0 += kTileRows)
    TransposeTile<T>(in + r0 * ld_in, ld_in, std::min(kTileRows, m - r0), n, out + r0, ld_out);
}

// y (batch, units) = x (batch, n_in) @ W, the connections of W in row-major order (rowptr by
// input, cols the unit of each). Parallel over tiles of kTile batch rows: a tile adds each
// connection's contribution into a (units, kTile) buffer, reading x block by block of kRowBlock
// inputs transposed into a small buffer, so that x is read once and every access stays in
// cache. Each y[b, u] is summed over its connections in row order, whatever the tiling.
template <typename T, int64_t kTile>
void ScatterByRows(OpKernelContext* ctx, const std::vector<int64_t>& rowptr, const int32_t* cols,
                   const T* values, const T* x, int64_t batch, int64_t n_in, int64_t units,
                   T* y) {
  using V = Vec<T>;
  static_assert(kTile % V::kLanes == 0, "a tile is a whole number of vectors");
  constexpr int kVectors = kTile / V::kLanes;
  const int64_t tiles = (batch + kTile - 1) / kTile;
  const int64_t nnz = rowptr.back();
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t cost = std::max<int64_t>(1, (nnz + n_in + units) * kTile * 4);
  tensorflow::Shard(
      workers->num_threads, workers->workers, tiles, cost, [&](int64_t t0, int64_t t1) {
        Scratch<T> acc(units * kTile), xloc(kRowBlock * kTile);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t b0 = t * kTile, bt = std::min(kTile, batch - b0);
          std::fill(acc.data, acc.data + units * kTile, T(0));
          for (int64_t r0 = 0; r0 < n_in; r0 += kRowBlock) {
            const int64_t rn = std::min(kRowBlock, n_in - r0);
            if (rowptr[r0] == rowptr[r0 + rn]) continue;
            TransposeRows<T>(x + b0 * n_in + r0, n_in, bt, rn, xloc.data, kTile);
            for (int64_t r = 0; r < rn; ++r) {
              const int64_t k0 = rowptr[r0 + r], k1 = rowptr[r0 + r + 1];
              if (k0 == k1) continue;
              typename V::type xr[kVectors];
              for (int i = 0; i < kVectors; ++i)
                xr[i] = V::Load(xloc.data + r * kTile + i * V::kLanes);
              for (int64_t k = k0; k < k1; ++k) {
                if (k + kAhead < nnz) __builtin_prefetch(acc.data + cols[k + kAhead] * kTile);
                T* a = acc.data + static_cast<int64_t>(cols[k]) * kTile;
                const T v = values[k];
                for (int i = 0; i < kVectors; ++i)
                  V::Store(a + i * V::kLanes, V::Load(a + i * V::kLanes) + v * xr[i]);
              }
            }
          }
          // y[b0 + j, u] = acc[u, j]
          TransposeRows<T>(acc.data, kTile, units, bt, y + b0 * units, units);
        }
      });
}

// dx (batch, n_in) = dy (batch, units) @ W.T, the connections of W in row-major order. Parallel
// over tiles of kTile batch rows: a tile transposes its rows of dy into a (units, kTile) buffer,
// then sums each input's connections in registers, a block of kRowBlock inputs at a time
// transposed into dx. Each dx[b, r] is summed over the connections of r in their order.
template <typename T, int64_t kTile>
void GatherByRows(OpKernelContext* ctx, const std::vector<int64_t>& rowptr, const int32_t* cols,
                  const T* values, const T* dy, int64_t batch, int64_t n_in, int64_t units,
                  T* dx) {
  using V = Vec<T>;
  static_assert(kTile % V::kLanes == 0, "a tile is a whole number of vectors");
  constexpr int kVectors = kTile / V::kLanes;
  const int64_t tiles = (batch + kTile - 1) / kTile;
  const int64_t nnz = rowptr.back();
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t cost = std::max<int64_t>(1, (nnz + n_in + units) * kTile * 4);
  tensorflow::Shard(
      workers->num_threads, workers->workers, tiles, cost, [&](int64_t t0, int64_t t1) {
        Scratch<T> dyloc(units * kTile), out(kRowBlock * kTile);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t b0 = t * kTile, bt = std::min(kTile, batch - b0);
          TransposeRows<T>(dy + b0 * units, units, bt, units, dyloc.data, kTile);
          for (int64_t r0 = 0; r0 < n_in; r0 += kRowBlock) {
            const int64_t rn = std::min(kRowBlock, n_in - r0);
            for (int64_t r = 0; r < rn; ++r) {
              typename V::type acc[kVectors];
              for (int i = 0; i < kVectors; ++i) acc[i] = typename V::type{};
              for (int64_t k = rowptr[r0 + r]; k < rowptr[r0 + r + 1]; ++k) {
                if (k + kAhead < nnz) __builtin_prefetch(dyloc.data + cols[k + kAhead] * kTile);
                const T* d = dyloc.data + static_cast<int64_t>(cols[k]) * kTile;
                const T v = values[k];
                for (int i = 0; i < kVectors; ++i) acc[i] += v * V::Load(d + i * V::kLanes);
              }
              for (int i = 0; i < kVectors; ++i)
                V::Store(out.data + r * kTile + i * V::kLanes, acc[i]);
            }
            TransposeRows<T>(out.data, kTile, rn, bt, dx + b0 * n_in + r0, n_in);
          }
        }
      });
}

// Calls f with the batch-tile width of ScatterByRows and GatherByRows for `batch` rows, as a
// std::integral_constant: 32 (two cache lines of float per unit; measured faster than 16 side
// by side at 4096 x 4096, 1%, batch 128, and equal at batch 32), and 16 below 32 rows, which
// wastes less on padding.
template <typename F>
void WithTileWidth(int64_t batch, F&& f) {
  if (batch >= 32)
    f(std::integral_constant<int64_t, 32>());
  else
    f(std::integral_constant<int64_t, 16>());
}

// Group pointers from a key that must be non-decreasing and < groups.
bool GroupPointers(const int32_t* key, int64_t nnz, int64_t groups, std::vector<int64_t>* ptr) {
  ptr->assign(groups + 1, 0);
  int64_t prev = 0;
  for (int64_t k = 0; k < nnz; ++k) {
    const int64_t g = key[k];
    if (g < prev || g >= groups) return false;
    (*ptr)[g + 1] += 1;
    prev = g;
  }
  for (int64_t g = 0; g < groups; ++g) (*ptr)[g + 1] += (*ptr)[g];
  return true;
}

bool InRange(const int32_t* a, int64_t n, int64_t limit) {
  for (int64_t k = 0; k < n; ++k)
    if (a[k] < 0 || a[k] >= limit) return false;
  return true;
}

// Checks n connections (rows sorted and < n_in, cols < units) and returns their row pointers
// in *rowptr; false, with the op's error set, when they do not fit.
bool CheckConnections(OpKernelContext* ctx, const Tensor& rows, const Tensor& cols, int64_t n,
                      int64_t n_in, int64_t units, std::vector<int64_t>* rowptr) {
  if (rows.dims() != 1 || rows.NumElements() != n || cols.NumElements() != n) {
    ctx->SetStatus(absl::InvalidArgumentError("values, rows and cols must have one length"));
    return false;
  }
  if (!InRange(cols.flat<int32_t>().data(), n, units)) {
    ctx->SetStatus(absl::InvalidArgumentError("cols out of range"));
    return false;
  }
  if (!GroupPointers(rows.flat<int32_t>().data(), n, n_in, rowptr)) {
    ctx->SetStatus(absl::InvalidArgumentError("rows out of range or not sorted"));
    return false;
  }
  return true;
}

template <typename T>
class SparseMatmulOp : public OpKernel {
 public:
  explicit SparseMatmulOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("units", &units_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& values = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    const Tensor& cols = ctx->input(3);
    OP_REQUIRES(ctx, x.dims() == 2 && values.dims() == 1,
                absl::InvalidArgumentError("x must be a matrix and values a vector"));
    const int64_t nnz = values.NumElements(), batch = x.dim_size(0), n_in = x.dim_size(1);
    std::vector<int64_t> rowptr;
    if (!CheckConnections(ctx, rows, cols, nnz, n_in, units_, &rowptr)) return;
    const int32_t* cols_p = cols.flat<int32_t>().data();
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, units_}), &y));
    if (batch == 0 || units_ == 0) return;
    const T *values_p = values.flat<T>().data(), *x_p = x.flat<T>().data();
    T* y_p = y->flat<T>().data();
    WithTileWidth(batch, [&](auto tile) {
      ScatterByRows<T, decltype(tile)::value>(ctx, rowptr, cols_p, values_p, x_p, batch, n_in,
                                              units_, y_p);
    });
  }

 private:
  int64_t units_ = 0;
};

// The gradient is two ops, so that a graph that needs no dx (the first layer) never computes
// it: TensorFlow prunes an op whose outputs nothing reads.

// dvalues[k] = x[:, rows[k]] . dy[:, cols[k]], from dy transposed once and x a block of
// kRowBlock inputs at a time (transposed into a small buffer); parallel over the blocks.
template <typename T>
class SparseMatmulGradValuesOp : public OpKernel {
 public:
  explicit SparseMatmulGradValuesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    const Tensor& cols = ctx->input(3);
    OP_REQUIRES(ctx, x.dims() == 2 && dy.dims() == 2 && x.dim_size(0) == dy.dim_size(0),
                absl::InvalidArgumentError("x and dy must be matrices with one batch size"));
    const int64_t nnz = rows.NumElements();
    const int64_t batch = x.dim_size(0), n_in = x.dim_size(1), units = dy.dim_size(1);
    std::vector<int64_t> rowptr;
    if (!CheckConnections(ctx, rows, cols, nnz, n_in, units, &rowptr)) return;
    const int32_t* rows_p = rows.flat<int32_t>().data();
    const int32_t* cols_p = cols.flat<int32_t>().data();
    Tensor* dvalues = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({nnz}), &dvalues));
    Tensor dyt;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(dy.dtype(), TensorShape({units, batch}), &dyt));
    T* dv_p = dvalues->flat<T>().data();
    const T* x_p = x.flat<T>().data();
    T* dyt_p = dyt.flat<T>().data();
    Transpose<T>(ctx, dy.flat<T>().data(), batch, units, dyt_p);
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t blocks = (n_in + kRowBlock - 1) / kRowBlock;
    const int64_t cost =
        std::max<int64_t>(1, (nnz / std::max<int64_t>(blocks, 1) + kRowBlock) * batch * 2);
    tensorflow::Shard(
        workers->num_threads, workers->workers, blocks, cost, [&](int64_t b0, int64_t b1) {
          Scratch<T> xloc(kRowBlock * std::max<int64_t>(batch, 1));
          for (int64_t block = b0; block < b1; ++block) {
            const int64_t r0 = block * kRowBlock, rn = std::min(kRowBlock, n_in - r0);
            const int64_t k0 = rowptr[r0], k1 = rowptr[r0 + rn];
            if (k0 == k1) continue;
            TransposeRows<T>(x_p + r0, n_in, batch, rn, xloc.data, batch);  // (rn, batch)
            for (int64_t k = k0; k < k1; ++k) {
              if (k + kAhead < k1)
                Prefetch(dyt_p + static_cast<int64_t>(cols_p[k + kAhead]) * batch,
                         batch * sizeof(T));
              dv_p[k] = Dot<T>(xloc.data + (static_cast<int64_t>(rows_p[k]) - r0) * batch,
                               dyt_p + static_cast<int64_t>(cols_p[k]) * batch, batch);
            }
          }
        });
  }
};

// dx = dy @ W.T.
template <typename T>
class SparseMatmulGradInputOp : public OpKernel {
 public:
  explicit SparseMatmulGradInputOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("n_in", &n_in_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& values = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    const Tensor& cols = ctx->input(3);
    OP_REQUIRES(ctx, dy.dims() == 2 && values.dims() == 1,
                absl::InvalidArgumentError("dy must be a matrix and values a vector"));
    const int64_t nnz = values.NumElements(), batch = dy.dim_size(0), units = dy.dim_size(1);
    std::vector<int64_t> rowptr;
    if (!CheckConnections(ctx, rows, cols, nnz, n_in_, units, &rowptr)) return;
    const int32_t* cols_p = cols.flat<int32_t>().data();
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, n_in_}), &dx));
    if (batch == 0 || n_in_ == 0) return;
    const T *values_p = values.flat<T>().data(), *dy_p = dy.flat<T>().data();
    T* dx_p = dx->flat<T>().data();
    WithTileWidth(batch, [&](auto tile) {
      GatherByRows<T, decltype(tile)::value>(ctx, rowptr, cols_p, values_p, dy_p, batch, n_in_,
                                             units, dx_p);
    });
  }

 private:
  int64_t n_in_ = 0;
};

}  // namespace

REGISTER_OP("MaskmagicSparseMatmul")
    .Input("x: T")
    .Input("values: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Output("y: T")
    .Attr("units: int >= 0")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      int64_t units;
      TF_RETURN_IF_ERROR(c->GetAttr("units", &units));
      c->set_output(0, c->Matrix(c->Dim(x, 0), units));
      return absl::OkStatus();
    });

REGISTER_OP("MaskmagicSparseMatmulGradValues")
    .Input("x: T")
    .Input("dy: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Output("dvalues: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, dy;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &dy));
      c->set_output(0, c->Vector(c->Dim(c->input(2), 0)));
      return absl::OkStatus();
    });

REGISTER_OP("MaskmagicSparseMatmulGradInput")
    .Input("dy: T")
    .Input("values: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Output("dx: T")
    .Attr("n_in: int >= 0")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle dy;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &dy));
      int64_t n_in;
      TF_RETURN_IF_ERROR(c->GetAttr("n_in", &n_in));
      c->set_output(0, c->Matrix(c->Dim(dy, 0), n_in));
      return absl::OkStatus();
    });

#define REGISTER(T)                                                                           \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("MaskmagicSparseMatmul").Device(DEVICE_CPU).TypeConstraint<T>("T"),                \
      SparseMatmulOp<T>);                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("MaskmagicSparseMatmulGradValues").Device(DEVICE_CPU).TypeConstraint<T>("T"),      \
      SparseMatmulGradValuesOp<T>);                                                           \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("MaskmagicSparseMatmulGradInput").Device(DEVICE_CPU).TypeConstraint<T>("T"),       \
      SparseMatmulGradInputOp<T>);

REGISTER(float)
REGISTER(double)
