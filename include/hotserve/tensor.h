/* tensor.h - element types and the plain tensor view that crosses every hotserve API. */
#ifndef HOTSERVE_TENSOR_H
#define HOTSERVE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HS_MAX_DIMS 8

/* Element types. Values match ONNX TensorProto.DataType so the front end can map them 1:1.
 * X(name, onnx_value, element_size, kserve_name, numpy_descr) */
#define HS_DTYPE_MAP(X)                         \
  X(FLOAT32, 1, 4, "FP32", "<f4")               \
  X(UINT8, 2, 1, "UINT8", "|u1")                \
  X(INT8, 3, 1, "INT8", "|i1")                  \
  X(UINT16, 4, 2, "UINT16", "<u2")              \
  X(INT16, 5, 2, "INT16", "<i2")                \
  X(INT32, 6, 4, "INT32", "<i4")                \
  X(INT64, 7, 8, "INT64", "<i8")                \
  X(BOOL, 9, 1, "BOOL", "|b1")                  \
  X(FLOAT16, 10, 2, "FP16", "<f2")              \
  X(FLOAT64, 11, 8, "FP64", "<f8")              \
  X(UINT32, 12, 4, "UINT32", "<u4")             \
  X(UINT64, 13, 8, "UINT64", "<u8")

typedef enum {
  HS_DT_UNDEFINED = 0,
#define HS_DTYPE_ENUM(name, onnx, size, kserve, npy) HS_DT_##name = onnx,
  HS_DTYPE_MAP(HS_DTYPE_ENUM)
#undef HS_DTYPE_ENUM
} hs_dtype;

/* Bytes per element, 0 for an unknown type. */
size_t hs_dtype_size(hs_dtype dt);
/* KServe v2 datatype name ("FP32"), or NULL for an unknown type. */
const char *hs_dtype_kserve_name(hs_dtype dt);
/* Parses a KServe v2 datatype name; HS_DT_UNDEFINED when unknown. */
hs_dtype hs_dtype_from_kserve(const char *name);
/* numpy dtype descr ("<f4"), or NULL. */
const char *hs_dtype_npy_descr(hs_dtype dt);
/* Parses a numpy descr ("<f4", "float32"-style descrs are not accepted); HS_DT_UNDEFINED when unknown. */
hs_dtype hs_dtype_from_npy(const char *descr);

/* A dense, row-major tensor view. It never owns `data`: whoever filled it says who frees it. */
typedef struct hs_tensor {
  hs_dtype dtype;
  int ndim;                    /* 0 for a scalar */
  int64_t dims[HS_MAX_DIMS];
  void *data;
  size_t nbytes;               /* = element count * dtype size */
} hs_tensor;

/* Element count of dims[0..ndim), or -1 when a dimension is negative or the product overflows
 * int64 (a hostile shape never wraps around). */
int64_t hs_shape_numel(const int64_t *dims, int ndim);

/* Describes a model input or output. A dimension of -1 is dynamic (symbolic in ONNX). */
typedef struct hs_io_desc {
  char name[128];
  hs_dtype dtype;
  int ndim;
  int64_t dims[HS_MAX_DIMS];
} hs_io_desc;

#ifdef __cplusplus
}
#endif
#endif
