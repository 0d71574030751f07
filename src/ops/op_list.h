/* op_list.h - the one list of ops: it generates the op ids (hs_op_id, ops.h) and the op table's rows (table.c). */
#ifndef HS_OPS_OP_LIST_H
#define HS_OPS_OP_LIST_H

/*
 * One line per ONNX op of the default domain:
 *   X(op, impl, since, min_in, max_in, min_out, max_out, value_inputs, flags)
 * op        the ONNX op_type, spelled as ONNX spells it: the id is HS_OP_<op>, the name "<op>"
 * impl      the entry points: hs_op_impl_<impl>, defined in the op family's file (named in each group)
 * since     lowest opset handled (opsets below are refused at load)
 * in, out   input and output count ranges (trailing omitted optional ones do not count)
 * value_inputs  HS_IN(i) | ...: inputs whose contents decide output shapes (known when planning), or 0
 * flags     HS_OP_SHAPE_ONLY | HS_OP_ALIAS | HS_OP_CONTROL | HS_OP_INTERNAL (ops.h), or 0
 * Adding an op: the checklist in docs/KERNELS.md.
 */
#define HS_OP_LIST(X)                                                                \
  /* elementwise.c */                                                                \
  X(Add, binary, 6, 2, 2, 1, 1, 0, 0)                                                \
  X(Sub, binary, 6, 2, 2, 1, 1, 0, 0)                                                \
  X(Mul, binary, 6, 2, 2, 1, 1, 0, 0)                                                \
  X(Div, binary, 6, 2, 2, 1, 1, 0, 0)                                                \
  X(Pow, binary, 6, 2, 2, 1, 1, 0, 0)                                                \
  X(PRelu, binary, 6, 2, 2, 1, 1, 0, 0)                                              \
  X(Relu, unary, 6, 1, 1, 1, 1, 0, 0)                                                \
  X(LeakyRelu, unary, 6, 1, 1, 1, 1, 0, 0)                                           \
  X(Sigmoid, unary, 6, 1, 1, 1, 1, 0, 0)                                             \
  X(HardSigmoid, unary, 6, 1, 1, 1, 1, 0, 0)                                         \
  X(HardSwish, unary, 6, 1, 1, 1, 1, 0, 0)                                           \
  X(Tanh, unary, 6, 1, 1, 1, 1, 0, 0)                                                \
  X(Erf, unary, 6, 1, 1, 1, 1, 0, 0)                                                 \
  X(Exp, unary, 6, 1, 1, 1, 1, 0, 0)                                                 \
  X(Log, unary, 6, 1, 1, 1, 1, 0, 0)                                                 \
  X(Neg, unary, 6, 1, 1, 1, 1, 0, 0)                                                 \
  X(Abs, unary, 6, 1, 1, 1, 1, 0, 0)                                                 \
  X(Reciprocal, unary, 6, 1, 1, 1, 1, 0, 0)                                          \
  X(Sqrt, unary, 6, 1, 1, 1, 1, 0, 0)                                                \
  X(Floor, unary, 6, 1, 1, 1, 1, 0, 0)                                               \
  X(Ceil, unary, 6, 1, 1, 1, 1, 0, 0)                                                \
  X(Elu, unary, 6, 1, 1, 1, 1, 0, 0)                                                 \
  X(Softplus, unary, 1, 1, 1, 1, 1, 0, 0)                                            \
  X(Clip, unary, 6, 1, 3, 1, 1, 0, 0)                                                \
  X(Identity, unary_view, 1, 1, 1, 1, 1, 0, HS_OP_ALIAS)                             \
  X(Dropout, unary_view, 7, 1, 3, 1, 2, 0, HS_OP_ALIAS)                              \
  /* matmul.c */                                                                     \
  X(MatMul, matmul, 1, 2, 2, 1, 1, 0, 0)                                             \
  X(Gemm, gemm, 6, 2, 3, 1, 1, 0, 0)                                                 \
  /* attention.c: made by engine/pass_fuse_attention.c, never named by a model */    \
  X(FusedAttention, attention, 1, 3, 4, 1, 1, 0, HS_OP_INTERNAL)                     \
  /* shape.c: views of the input's bytes */                                          \
  X(Reshape, reshape, 5, 2, 2, 1, 1, HS_IN(1), HS_OP_ALIAS)                          \
  X(Flatten, flatten, 1, 1, 1, 1, 1, 0, HS_OP_ALIAS)                                 \
  X(Squeeze, squeeze, 1, 1, 2, 1, 1, HS_IN(1), HS_OP_ALIAS)                          \
  X(Unsqueeze, unsqueeze, 1, 1, 2, 1, 1, HS_IN(1), HS_OP_ALIAS)                      \
  /* select.c: parts of tensors, moved or joined */                                  \
  X(Transpose, transpose, 1, 1, 1, 1, 1, 0, 0)                                       \
  X(Concat, concat, 4, 1, 64, 1, 1, 0, 0)                                            \
  X(Gather, gather, 1, 2, 2, 1, 1, 0, 0)                                             \
  X(Slice, slice, 1, 1, 5, 1, 1, HS_IN(1) | HS_IN(2) | HS_IN(3) | HS_IN(4), 0)       \
  X(Split, split, 2, 1, 2, 1, 64, HS_IN(1), 0)                                       \
  X(Expand, expand, 8, 2, 2, 1, 1, HS_IN(1), 0)                                      \
  X(Tile, tile, 6, 2, 2, 1, 1, HS_IN(1), 0)                                          \
  /* generate.c: shapes, sizes, types and generated tensors */                       \
  X(Shape, shape, 1, 1, 1, 1, 1, 0, HS_OP_SHAPE_ONLY)                                \
  X(Size, size, 1, 1, 1, 1, 1, 0, HS_OP_SHAPE_ONLY)                                  \
  X(Cast, cast, 6, 1, 1, 1, 1, 0, 0)                                                 \
  X(CastLike, cast_like, 15, 2, 2, 1, 1, 0, 0)                                       \
  X(ConstantOfShape, constant_of_shape, 9, 1, 1, 1, 1, HS_IN(0), 0)                  \
  X(Range, range, 11, 3, 3, 1, 1, HS_IN(0) | HS_IN(1) | HS_IN(2), 0)                 \
  /* conv.c */                                                                       \
  X(Conv, conv, 1, 2, 3, 1, 1, 0, 0)                                                 \
  X(ConvTranspose, conv_transpose, 1, 2, 3, 1, 1, 0, 0)                              \
  /* pool.c */                                                                       \
  X(MaxPool, pool, 1, 1, 1, 1, 2, 0, 0)                                              \
  X(AveragePool, pool, 1, 1, 1, 1, 1, 0, 0)                                          \
  X(GlobalAveragePool, pool, 1, 1, 1, 1, 1, 0, 0)                                    \
  X(GlobalMaxPool, pool, 1, 1, 1, 1, 1, 0, 0)                                        \
  /* norm.c */                                                                       \
  X(BatchNormalization, batch_norm, 6, 5, 5, 1, 5, 0, 0)                             \
  X(LayerNormalization, layer_norm, 17, 2, 3, 1, 3, 0, 0)                            \
  X(InstanceNormalization, instance_norm, 6, 3, 3, 1, 1, 0, 0)                       \
  X(Softmax, softmax, 1, 1, 1, 1, 1, 0, 0)                                           \
  X(LogSoftmax, softmax, 1, 1, 1, 1, 1, 0, 0)                                        \
  /* reduce.c */                                                                     \
  X(ReduceSum, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                                   \
  X(ReduceMean, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                                  \
  X(ReduceMax, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                                   \
  X(ReduceMin, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                                   \
  X(ReduceProd, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                                  \
  X(ReduceSumSquare, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                             \
  X(ReduceL2, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                                    \
  X(ReduceL1, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                                    \
  X(ReduceLogSum, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                                \
  X(ReduceLogSumExp, reduce, 1, 1, 2, 1, 1, HS_IN(1), 0)                             \
  /* resize.c */                                                                     \
  X(Resize, resize, 10, 1, 4, 1, 1, HS_IN(1) | HS_IN(2) | HS_IN(3), 0)               \
  X(Upsample, resize, 7, 1, 2, 1, 1, HS_IN(1), 0)                                    \
  X(Pad, pad, 1, 1, 4, 1, 1, HS_IN(1) | HS_IN(3), 0)                                 \
  /* logic.c */                                                                      \
  X(Equal, logic, 7, 2, 2, 1, 1, 0, 0)                                               \
  X(Less, logic, 7, 2, 2, 1, 1, 0, 0)                                                \
  X(Greater, logic, 7, 2, 2, 1, 1, 0, 0)                                             \
  X(LessOrEqual, logic, 12, 2, 2, 1, 1, 0, 0)                                        \
  X(GreaterOrEqual, logic, 12, 2, 2, 1, 1, 0, 0)                                     \
  X(And, logic, 7, 2, 2, 1, 1, 0, 0)                                                 \
  X(Or, logic, 7, 2, 2, 1, 1, 0, 0)                                                  \
  X(Xor, logic, 7, 2, 2, 1, 1, 0, 0)                                                 \
  X(Not, logic, 1, 1, 1, 1, 1, 0, 0)                                                 \
  X(Where, logic, 9, 3, 3, 1, 1, 0, 0)                                               \
  X(Max, logic, 6, 1, 8, 1, 1, 0, 0)                                                 \
  X(Min, logic, 6, 1, 8, 1, 1, 0, 0)                                                 \
  X(Sum, logic, 6, 1, 8, 1, 1, 0, 0)                                                 \
  X(Mean, logic, 6, 1, 8, 1, 1, 0, 0)                                                \
  /* rnn.c (every output is optional; a node must use one) */                        \
  X(RNN, rnn, 7, 3, 6, 1, 2, 0, 0)                                                   \
  X(GRU, rnn, 7, 3, 6, 1, 2, 0, 0)                                                   \
  X(LSTM, rnn, 7, 3, 8, 1, 3, 0, 0)                                                  \
  /* index.c: gathers and scatters by index, arg / top-k selections, running sums */ \
  X(GatherElements, gather_elements, 11, 2, 2, 1, 1, 0, 0)                           \
  X(ScatterElements, gather_elements, 11, 3, 3, 1, 1, 0, 0)                          \
  X(Scatter, gather_elements, 9, 3, 3, 1, 1, 0, 0)                                   \
  X(ArgMax, arg, 1, 1, 1, 1, 1, 0, 0)                                                \
  X(ArgMin, arg, 1, 1, 1, 1, 1, 0, 0)                                                \
  X(Hardmax, hardmax, 1, 1, 1, 1, 1, 0, 0)                                           \
  X(TopK, topk, 10, 2, 2, 1, 2, HS_IN(1), 0)                                         \
  X(CumSum, cumsum, 11, 2, 2, 1, 1, 0, 0)                                            \
  X(Trilu, trilu, 14, 1, 2, 1, 1, 0, 0)                                              \
  X(Unique, unique, 11, 1, 1, 1, 4, HS_IN(0), 0)                                     \
  X(NonZero, nonzero, 9, 1, 1, 1, 1, HS_IN(0), 0)                                    \
  /* math.c: element-wise math beyond elementwise.c */                               \
  X(Cos, math, 7, 1, 1, 1, 1, 0, 0)                                                  \
  X(Sin, math, 7, 1, 1, 1, 1, 0, 0)                                                  \
  X(Tan, math, 7, 1, 1, 1, 1, 0, 0)                                                  \
  X(Acos, math, 7, 1, 1, 1, 1, 0, 0)                                                 \
  X(Asin, math, 7, 1, 1, 1, 1, 0, 0)                                                 \
  X(Atan, math, 7, 1, 1, 1, 1, 0, 0)                                                 \
  X(Cosh, math, 9, 1, 1, 1, 1, 0, 0)                                                 \
  X(Sinh, math, 9, 1, 1, 1, 1, 0, 0)                                                 \
  X(Acosh, math, 9, 1, 1, 1, 1, 0, 0)                                                \
  X(Asinh, math, 9, 1, 1, 1, 1, 0, 0)                                                \
  X(Atanh, math, 9, 1, 1, 1, 1, 0, 0)                                                \
  X(Sign, math, 9, 1, 1, 1, 1, 0, 0)                                                 \
  X(Round, math, 11, 1, 1, 1, 1, 0, 0)                                               \
  X(Softsign, math, 1, 1, 1, 1, 1, 0, 0)                                             \
  X(Selu, math, 6, 1, 1, 1, 1, 0, 0)                                                 \
  X(Celu, math, 12, 1, 1, 1, 1, 0, 0)                                                \
  X(ThresholdedRelu, math, 10, 1, 1, 1, 1, 0, 0)                                     \
  X(Shrink, math, 9, 1, 1, 1, 1, 0, 0)                                               \
  X(Mish, math, 18, 1, 1, 1, 1, 0, 0)                                                \
  X(Gelu, math, 20, 1, 1, 1, 1, 0, 0)                                                \
  X(IsInf, math, 10, 1, 1, 1, 1, 0, 0)                                               \
  X(IsNaN, math, 9, 1, 1, 1, 1, 0, 0)                                                \
  X(Mod, math, 10, 2, 2, 1, 1, 0, 0)                                                 \
  X(BitShift, math, 11, 2, 2, 1, 1, 0, 0)                                            \
  X(BitwiseAnd, math, 18, 2, 2, 1, 1, 0, 0)                                          \
  X(BitwiseOr, math, 18, 2, 2, 1, 1, 0, 0)                                           \
  X(BitwiseXor, math, 18, 2, 2, 1, 1, 0, 0)                                          \
  X(BitwiseNot, math, 18, 1, 1, 1, 1, 0, 0)                                          \
  /* loss.c */                                                                       \
  X(NegativeLogLikelihoodLoss, loss, 12, 2, 3, 1, 1, 0, 0)                           \
  X(SoftmaxCrossEntropyLoss, loss, 12, 2, 3, 1, 2, 0, 0)                             \
  /* linalg.c (Einsum: at most EIN_MAX_IN = 4 operands) */                           \
  X(Det, det, 11, 1, 1, 1, 1, 0, 0)                                                  \
  X(Einsum, einsum, 12, 1, 4, 1, 1, 0, 0)                                            \
  /* norm_extra.c */                                                                 \
  X(MeanVarianceNormalization, mvn, 9, 1, 1, 1, 1, 0, 0)                             \
  X(GroupNormalization, group_norm, 18, 3, 3, 1, 1, 0, 0)                            \
  X(LRN, lrn, 1, 1, 1, 1, 1, 0, 0)                                                   \
  /* movement.c: elements moved between positions */                                 \
  X(MaxUnpool, max_unpool, 9, 2, 3, 1, 1, HS_IN(2), 0)                               \
  X(DepthToSpace, depth_to_space, 1, 1, 1, 1, 1, 0, 0)                               \
  X(SpaceToDepth, depth_to_space, 1, 1, 1, 1, 1, 0, 0)                               \
  X(GatherND, gather_nd, 11, 2, 2, 1, 1, 0, 0)                                       \
  X(ScatterND, gather_nd, 11, 3, 3, 1, 1, 0, 0)                                      \
  X(OneHot, one_hot, 9, 3, 3, 1, 1, HS_IN(1), 0)                                     \
  X(EyeLike, eye_like, 9, 1, 1, 1, 1, 0, 0)                                          \
  X(Compress, compress, 9, 2, 2, 1, 1, HS_IN(1), 0)                                  \
  X(ReverseSequence, reverse_sequence, 10, 2, 2, 1, 1, 0, 0)                         \
  /* signal.c */                                                                     \
  X(HannWindow, window, 17, 1, 1, 1, 1, HS_IN(0), 0)                                 \
  X(HammingWindow, window, 17, 1, 1, 1, 1, HS_IN(0), 0)                              \
  X(BlackmanWindow, window, 17, 1, 1, 1, 1, HS_IN(0), 0)                             \
  /* quant.c */                                                                      \
  X(MatMulInteger, quant_matmul, 10, 2, 4, 1, 1, 0, 0)                               \
  X(QLinearMatMul, quant_matmul, 10, 8, 9, 1, 1, 0, 0)                               \
  X(QuantizeLinear, quant, 10, 2, 3, 1, 1, 0, 0)                                     \
  X(DequantizeLinear, quant, 10, 2, 3, 1, 1, 0, 0)                                   \
  X(DynamicQuantizeLinear, quant, 11, 1, 1, 1, 3, 0, 0)                              \
  /* qconv.c */                                                                      \
  X(QLinearConv, qconv, 10, 8, 9, 1, 1, 0, 0)                                        \
  X(ConvInteger, qconv, 10, 2, 4, 1, 1, 0, 0)                                        \
  /* detect.c */                                                                     \
  X(NonMaxSuppression, nms, 10, 2, 5, 1, 1, HS_IN(0) | HS_IN(1) | HS_IN(2) | HS_IN(3) | HS_IN(4), 0) \
  /* control.c: subgraphs; inputs past the formal ones are the subgraphs' outer-scope values */ \
  X(If, ctl_if, 1, 1, 1024, 1, 256, 0, HS_OP_CONTROL)                                   \
  X(Loop, ctl_loop, 1, 0, 1024, 1, 256, 0, HS_OP_CONTROL)                               \
  X(Scan, ctl_scan, 9, 1, 1024, 1, 256, 0, HS_OP_CONTROL)

#endif
