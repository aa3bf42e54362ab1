// maskmagic's native mask select: y = where(mask, x, +0), the masked kernel of a dense MaskedDense
// and its gradient.
//
// TensorFlow's SelectV2 with a scalar zero takes its broadcasting path and always writes a new
// buffer; this op clears the masked entries with a bitwise AND (branch-free, vectorised by the
// compiler), writes in place when x's buffer is not shared (a gradient fresh from its matmul),
// and, for a mask of all ones, returns x itself (the check stops at the first 0). The result
// has exactly the bits of tf.where(mask, x, 0): x's own bits where the mask is true, +0.0
// elsewhere (NaN and -0.0 included).
//
// Built by maskmagic/layers/native.py together with sparse_ops.cc.

#include <cstdint>
#include <cstring>
#include <type_traits>

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
using tensorflow::shape_inference::InferenceContext;

// Entries per unit of work for the sharder (one select is a load, an AND and a store).
constexpr int64_t kCostPerEntry = 4;

// y[i] = x[i] where mask[i], else all bits 0, for the unsigned integer type U of T's width.
template <typename U>
void SelectBits(const U* x, const uint8_t* mask, U* y, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) y[i] = x[i] & (U(0) - U(mask[i] != 0));
}

template <typename T>
class MaskSelectOp : public OpKernel {
  using Bits = typename std::conditional<
      sizeof(T) == 2, uint16_t,
      typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type>::type;
  static_assert(sizeof(Bits) == sizeof(T), "no unsigned type of T's width");

 public:
  explicit MaskSelectOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& mask = ctx->input(1);
    OP_REQUIRES(ctx, x.shape() == mask.shape(),
                tensorflow::errors::InvalidArgument(
                    "MaskmagicMaskSelect expected a mask shaped like x ", x.shape().DebugString(),
                    "; received ", mask.shape().DebugString()));
    const int64_t n = x.NumElements();
    const uint8_t* mask_p = reinterpret_cast<const uint8_t*>(mask.flat<bool>().data());
    if (n == 0 || std::memchr(mask_p, 0, n) == nullptr) {  // all ones: nothing to clear
      ctx->set_output(0, x);
      return;
    }
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    const Bits* x_p = reinterpret_cast<const Bits*>(x.flat<T>().data());
    Bits* y_p = reinterpret_cast<Bits*>(y->flat<T>().data());
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, n, kCostPerEntry,
                      [&](int64_t begin, int64_t end) {
                        SelectBits<Bits>(x_p, mask_p, y_p, begin, end);
                      });
  }
};

}  // namespace

REGISTER_OP("MaskmagicMaskSelect")
    .Input("x: T")
    .Input("mask: bool")
    .Output("y: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn([](InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle shape;
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), c->input(1), &shape));
      c->set_output(0, shape);
      return absl::OkStatus();
    });

#define REGISTER(T)                                                                          \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("MaskmagicMaskSelect").Device(DEVICE_CPU).TypeConstraint<T>("T"), MaskSelectOp<T>);

REGISTER(Eigen::half)
REGISTER(Eigen::bfloat16)
REGISTER(float)
REGISTER(double)
