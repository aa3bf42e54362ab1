// maskmagic's native block summary: what the gradient inspector shows of a large dense layer, in
// one pass over its (inputs, units) would-be gradient.
//
// The inspector's overview pools the gradient g = where(mask, wb, +0) in (bh, bw) blocks: each
// block shows its entry of largest magnitude, sign kept, as the maximum of an int32 key (the
// magnitude's bits with the lowest mantissa bit replaced by the sign; see signed_key in
// maskmagic/widgets/inspector/probes.py). It also pools wb itself (masked layers) and the op's
// update view where(update, g, +0), and counts the sum of squares and the zeros of g. XLA's
// fused version of this reads the arrays in strided passes; this op reads wb, the mask and the
// update set once, row by row, with every inner loop a vectorisable elementwise step:
//
//   * per block row, running per-column maxima of the keys (and sums of squares in double,
//     and zero counts) over its bh input rows;
//   * then the maxima of each run of bw columns, and the block row's sums, in a fixed order.
//
// Keys are exact (a maximum does not depend on the order), so they equal XLA's; the sum of
// squares is accumulated in double and differs from a float32 sum only by rounding.
//
// Built by maskmagic/layers/native.py together with the other sources.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;

// The pooling key of a float's bits (see the header): never negative, so 0 (+0.0) is the
// smallest key and padding never wins a block.
inline int32_t Key(uint32_t bits) {
  return static_cast<int32_t>((bits & 0x7FFFFFFEu) | (bits >> 31));
}

// bits where keep, else 0 (the bits of +0.0).
inline uint32_t Keep(uint32_t bits, uint8_t keep) { return bits & (0u - uint32_t(keep != 0)); }

// What one block row contributes: its keys (cols x views, written into the output) and sums.
struct RowSums {
  double sumsq = 0;
  int64_t zeros = 0;
};

class BlockSummaryOp : public OpKernel {
 public:
  explicit BlockSummaryOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bh", &bh_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bw", &bw_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_mask", &has_mask_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_update", &has_update_));
    OP_REQUIRES(ctx, bh_ >= 1 && bw_ >= 1,
                tensorflow::errors::InvalidArgument("MaskmagicBlockSummary expected bh, bw >= 1"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& wb = ctx->input(0);
    const Tensor& mask = ctx->input(1);
    const Tensor& update = ctx->input(2);
    OP_REQUIRES(ctx, wb.dims() == 2,
                tensorflow::errors::InvalidArgument(
                    "MaskmagicBlockSummary expected a matrix; received shape ",
                    wb.shape().DebugString()));
    for (const auto& [on, t, what] : {std::make_tuple(has_mask_, &mask, "mask"),
                                      std::make_tuple(has_update_, &update, "update")}) {
      OP_REQUIRES(ctx, !on || t->shape() == wb.shape(),
                  tensorflow::errors::InvalidArgument(
                      "MaskmagicBlockSummary expected a ", what, " shaped like wb ",
                      wb.shape().DebugString(), "; received ", t->shape().DebugString()));
    }
    const int64_t n_rows = wb.dim_size(0), n_cols = wb.dim_size(1);
    const int64_t rows = (n_rows + bh_ - 1) / bh_, cols = (n_cols + bw_ - 1) / bw_;
    const int views = 1 + int(has_mask_) + int(has_update_);
    Tensor* keys = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({rows, cols, views}), &keys));
    Tensor* sumsq = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &sumsq));
    Tensor* zeros = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({}), &zeros));
    std::vector<RowSums> sums(rows);
    const uint32_t* wb_p = reinterpret_cast<const uint32_t*>(wb.flat<float>().data());
    const uint8_t* mask_p =
        has_mask_ ? reinterpret_cast<const uint8_t*>(mask.flat<bool>().data()) : nullptr;
    const uint8_t* update_p =
        has_update_ ? reinterpret_cast<const uint8_t*>(update.flat<bool>().data()) : nullptr;
    int32_t* keys_p = keys->flat<int32_t>().data();
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t cost = std::max<int64_t>(1, bh_ * n_cols * 4 * views);
    tensorflow::Shard(
        workers->num_threads, workers->workers, rows, cost, [&](int64_t r0, int64_t r1) {
          std::vector<int32_t> g_max(n_cols), wb_max(n_cols), upd_max(n_cols);
          std::vector<uint32_t> g_bits(n_cols);
          std::vector<double> squares(n_cols);
          for (int64_t br = r0; br < r1; ++br) {
            std::fill(g_max.begin(), g_max.end(), 0);
            std::fill(wb_max.begin(), wb_max.end(), 0);
            std::fill(upd_max.begin(), upd_max.end(), 0);
            std::fill(squares.begin(), squares.end(), 0.0);
            int64_t zero_count = 0;
            const int64_t first = br * bh_, last = std::min(n_rows, first + bh_);
            for (int64_t r = first; r < last; ++r) {
              const uint32_t* w = wb_p + r * n_cols;
              uint32_t* g = g_bits.data();
              if (has_mask_) {
                const uint8_t* m = mask_p + r * n_cols;
                for (int64_t c = 0; c < n_cols; ++c) g[c] = Keep(w[c], m[c]);
                for (int64_t c = 0; c < n_cols; ++c) wb_max[c] = std::max(wb_max[c], Key(w[c]));
              } else {
                std::memcpy(g, w, n_cols * sizeof(uint32_t));
              }
              for (int64_t c = 0; c < n_cols; ++c) g_max[c] = std::max(g_max[c], Key(g[c]));
              if (has_update_) {
                const uint8_t* u = update_p + r * n_cols;
                for (int64_t c = 0; c < n_cols; ++c)
                  upd_max[c] = std::max(upd_max[c], Key(Keep(g[c], u[c])));
              }
              int64_t row_zeros = 0;
              for (int64_t c = 0; c < n_cols; ++c) {
                float value;
                std::memcpy(&value, g + c, sizeof(value));
                squares[c] += double(value) * double(value);
                row_zeros += value == 0.0f;
              }
              zero_count += row_zeros;
            }
            int32_t* out = keys_p + br * cols * views;
            for (int64_t bc = 0; bc < cols; ++bc) {
              const int64_t c0 = bc * bw_, c1 = std::min(n_cols, c0 + bw_);
              int32_t kg = 0, kw = 0, ku = 0;
              for (int64_t c = c0; c < c1; ++c) {
                kg = std::max(kg, g_max[c]);
                kw = std::max(kw, wb_max[c]);
                ku = std::max(ku, upd_max[c]);
              }
              int view = 0;
              out[bc * views + view++] = kg;
              if (has_mask_) out[bc * views + view++] = kw;
              if (has_update_) out[bc * views + view++] = ku;
            }
            double total = 0;
            for (int64_t c = 0; c < n_cols; ++c) total += squares[c];
            sums[br].sumsq = total;
            sums[br].zeros = zero_count;
          }
        });
    double total = 0;
    int64_t zero_total = 0;
    for (const RowSums& s : sums) {  // block rows in order: the same sum on any thread count
      total += s.sumsq;
      zero_total += s.zeros;
    }
    sumsq->scalar<float>()() = static_cast<float>(total);
    zeros->scalar<int64_t>()() = zero_total;
  }

 private:
  int64_t bh_ = 1, bw_ = 1;
  bool has_mask_ = false, has_update_ = false;
};

}  // namespace

REGISTER_OP("MaskmagicBlockSummary")
    .Input("wb: float")
    .Input("mask: bool")
    .Input("update: bool")
    .Attr("bh: int")
    .Attr("bw: int")
    .Attr("has_mask: bool")
    .Attr("has_update: bool")
    .Output("keys: int32")
    .Output("sumsq: float")
    .Output("zeros: int64")
    .SetShapeFn([](InferenceContext* c) {
      int64_t bh, bw;
      bool has_mask, has_update;
      TF_RETURN_IF_ERROR(c->GetAttr("bh", &bh));
      TF_RETURN_IF_ERROR(c->GetAttr("bw", &bw));
      TF_RETURN_IF_ERROR(c->GetAttr("has_mask", &has_mask));
      TF_RETURN_IF_ERROR(c->GetAttr("has_update", &has_update));
      tensorflow::shape_inference::ShapeHandle wb;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &wb));
      tensorflow::shape_inference::DimensionHandle rows, cols;
      TF_RETURN_IF_ERROR(c->Add(c->Dim(wb, 0), bh - 1, &rows));
      TF_RETURN_IF_ERROR(c->Divide(rows, bh, /*evenly_divisible=*/false, &rows));
      TF_RETURN_IF_ERROR(c->Add(c->Dim(wb, 1), bw - 1, &cols));
      TF_RETURN_IF_ERROR(c->Divide(cols, bw, /*evenly_divisible=*/false, &cols));
      c->set_output(0, c->MakeShape({rows, cols, 1 + int(has_mask) + int(has_update)}));
      c->set_output(1, c->Scalar());
      c->set_output(2, c->Scalar());
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("MaskmagicBlockSummary").Device(DEVICE_CPU), BlockSummaryOp);
