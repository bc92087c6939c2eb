// The emulated cuBLAS: column-major cublasGemmEx with f32 or bf16 inputs and f32 output,
// accumulated in f32, on the CPU, queued on the handle's stream.
#include <vector>

#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "memory.h"
#include "streams.h"

using namespace cuda_emulator;

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

// Element (row, col) of op(M) for a column-major M with leading dimension ld.
float element(const void* m, cudaDataType type, cublasOperation_t op, int64_t ld, int64_t row,
              int64_t col) {
  const int64_t index = op == CUBLAS_OP_N ? row + col * ld : col + row * ld;
  if (type == CUDA_R_32F) return static_cast<const float*>(m)[index];
  return __bfloat162float(static_cast<const __nv_bfloat16*>(m)[index]);
}

bool supported(cudaDataType type) { return type == CUDA_R_32F || type == CUDA_R_16BF; }

size_t extent(cublasOperation_t op, int64_t rows, int64_t cols, int64_t ld, cudaDataType type) {
  const int64_t stored_cols = op == CUBLAS_OP_N ? cols : rows;
  const int64_t stored_rows = op == CUBLAS_OP_N ? rows : cols;
  const size_t element_bytes = type == CUDA_R_32F ? 4 : 2;
  return static_cast<size_t>((stored_cols - 1) * ld + stored_rows) * element_bytes;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

// C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* a, cudaDataType a_type, int lda, const void* b,
                            cudaDataType b_type, int ldb, const void* beta, void* c,
                            cudaDataType c_type, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!supported(a_type) || !supported(b_type) || c_type != CUDA_R_32F ||
      compute != CUBLAS_COMPUTE_32F) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (m < 0 || n < 0 || k < 0 || lda < (transa == CUBLAS_OP_N ? m : k) ||
      ldb < (transb == CUBLAS_OP_N ? k : n) || ldc < m) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const bool inside = (k == 0 || (in_device_memory(a, extent(transa, m, k, lda, a_type)) &&
                                  in_device_memory(b, extent(transb, k, n, ldb, b_type)))) &&
                      in_device_memory(c, extent(CUBLAS_OP_N, m, n, ldc, CUDA_R_32F));
  if (!inside) {
    fault(cudaErrorIllegalAddress,
          "cublasGemmEx m=%d n=%d k=%d: an operand (A %p, B %p, C %p) is not inside one device "
          "allocation", m, n, k, a, b, c);
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  const float alpha_value = *static_cast<const float*>(alpha);  // host pointer mode: read now
  const float beta_value = *static_cast<const float*>(beta);
  enqueue(handle->stream, [=] {
    DeviceAccess access;
    // op(B) as n columns of k contiguous floats, then one row of op(A) at a time.
    std::vector<float> columns(static_cast<size_t>(n) * k), row(static_cast<size_t>(k));
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t l = 0; l < k; ++l) columns[j * k + l] = element(b, b_type, transb, ldb, l, j);
    }
    auto* out = static_cast<float*>(c);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t l = 0; l < k; ++l) row[l] = element(a, a_type, transa, lda, i, l);
      for (int64_t j = 0; j < n; ++j) {
        const float* column = columns.data() + j * k;
        float sum = 0.0f;
        for (int64_t l = 0; l < k; ++l) sum += row[l] * column[l];
        float& result = out[i + j * ldc];
        result = alpha_value * sum + (beta_value == 0.0f ? 0.0f : beta_value * result);
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}
