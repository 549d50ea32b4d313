/* A CUDA driver that does nothing: every call succeeds at once, no GPU is touched.
 *
 * Built into a libcuda.so.1 by swav_kernels/bench/null_driver.py so that Triton's real launch path
 * (argument binding, specialisation, its cache, the sm_90/sm_80 compile, the compiled kernel's C
 * launcher) runs on a machine without a GPU, to measure host cost and count launches. It reports one
 * device whose architecture and multiprocessor count the loader sets, and records each launch's
 * kernel name, grid, block and shared memory (the last NULL_RECORDS launches).
 */
#include <stdint.h>
#include <stddef.h>
#include <string.h>

typedef int CUresult;
enum { NULL_RECORDS = 4096, NULL_NAME = 96, NULL_FUNCTIONS = 512, NULL_PARAMS = 64, NULL_PARAM_BYTES = 512 };

typedef struct {
  unsigned grid[3], block[3], shared_bytes;
  char name[NULL_NAME];
  unsigned param_bytes;                 /* bytes of params copied: 0 unless the loader gave the sizes */
  unsigned char params[NULL_PARAM_BYTES];
} NullLaunch;

typedef struct {                        /* a loaded kernel: its handle is this record's address */
  char name[NULL_NAME];
  long module;
  int param_count;                      /* its parameter sizes, given by the loader (0: not recorded) */
  unsigned char param_sizes[NULL_PARAMS];
} NullFunction;

/* the leading fields of CUlaunchConfig (cuda.h) */
typedef struct {
  unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
} NullLaunchConfig;

static int device_major = 9, device_minor = 0, device_sms = 132;
static NullFunction functions[NULL_FUNCTIONS];
static int function_count;
static long module_count;
static int context_token;
static long launch_count;
static NullLaunch records[NULL_RECORDS];

/* ---- what the loader calls ---- */
void null_set_device(int major, int minor, int sms) { device_major = major; device_minor = minor; device_sms = sms; }
long null_launch_count(void) { return launch_count; }
const NullLaunch *null_launch_record(long index) {
  if (index < 0 || index >= launch_count || launch_count - index > NULL_RECORDS) return 0;
  return &records[index % NULL_RECORDS];
}

/* record the parameters of kernel `function` (a handle) from now on: `count`, of `sizes` bytes each */
void null_expect_parameters(uint64_t function, int count, const unsigned char *sizes) {
  NullFunction *record = (NullFunction *)(uintptr_t)function;
  if (record < functions || record >= functions + function_count) return;
  record->param_count = count < NULL_PARAMS ? count : NULL_PARAMS;
  memcpy(record->param_sizes, sizes, record->param_count);
}

/* ---- the driver API Triton's launcher uses (triton 3.6 to 3.9) ---- */
CUresult cuInit(unsigned flags) { return 0; }
CUresult cuDriverGetVersion(int *version) { *version = 13000; return 0; }
CUresult cuDeviceGetCount(int *count) { *count = 1; return 0; }
CUresult cuDeviceGet(int *device, int ordinal) { *device = 0; return 0; }
CUresult cuCtxGetCurrent(void **context) { *context = &context_token; return 0; }
CUresult cuCtxSetCurrent(void *context) { return 0; }
CUresult cuCtxGetDevice(int *device) { *device = 0; return 0; }
CUresult cuCtxGetLimit(size_t *value, int limit) { *value = 1 << 20; return 0; }
CUresult cuCtxSetLimit(int limit, size_t value) { return 0; }
CUresult cuDevicePrimaryCtxRetain(void **context, int device) { *context = &context_token; return 0; }

CUresult cuDeviceGetAttribute(int *value, int attribute, int device) {
  switch (attribute) {
    case 16: *value = device_sms; break;        /* MULTIPROCESSOR_COUNT */
    case 75: *value = device_major; break;      /* COMPUTE_CAPABILITY_MAJOR */
    case 76: *value = device_minor; break;      /* COMPUTE_CAPABILITY_MINOR */
    case 97: *value = device_major >= 9 ? 232448 : 166912; break;  /* MAX_SHARED_MEMORY_PER_BLOCK_OPTIN */
    case 81: *value = device_major >= 9 ? 233472 : 167936; break;  /* MAX_SHARED_MEMORY_PER_MULTIPROCESSOR */
    case 10: *value = 32; break;                /* WARP_SIZE */
    case 36: *value = 2619000; break;           /* MEMORY_CLOCK_RATE (kHz) */
    case 37: *value = 5120; break;              /* GLOBAL_MEMORY_BUS_WIDTH (bits) */
    default: *value = 1024;
  }
  return 0;
}

/* register and spill counts are not known without the real driver: report none */
CUresult cuFuncGetAttribute(int *value, int attribute, void *function) {
  *value = attribute == 0 ? 1024 : 0;  /* MAX_THREADS_PER_BLOCK */
  return 0;
}
CUresult cuFuncSetAttribute(void *function, int attribute, int value) { return 0; }
CUresult cuFuncSetCacheConfig(void *function, int config) { return 0; }
CUresult cuGetErrorString(CUresult error, const char **text) { *text = "null driver"; return 0; }
/* a module handle is a number, one per load: the same kernel name in two modules is two functions */
CUresult cuModuleLoadData(void **module, const void *image) { *module = (void *)(uintptr_t)++module_count; return 0; }
CUresult cuModuleUnload(void *module) { return 0; }

CUresult cuModuleGetFunction(void **function, void *module, const char *name) {
  long id = (long)(uintptr_t)module;
  for (int i = 0; i < function_count; ++i)
    if (functions[i].module == id && strncmp(functions[i].name, name, NULL_NAME - 1) == 0) {
      *function = &functions[i];
      return 0;
    }
  NullFunction *record = &functions[function_count < NULL_FUNCTIONS ? function_count++ : NULL_FUNCTIONS - 1];
  memset(record, 0, sizeof *record);
  strncpy(record->name, name, NULL_NAME - 1);
  record->module = id;
  *function = record;
  return 0;
}

CUresult cuOccupancyMaxActiveClusters(int *clusters, void *function, const void *config) { *clusters = 1; return 0; }

/* CU_POINTER_ATTRIBUTE_DEVICE_POINTER (3): the device address of a pointer is the pointer itself */
CUresult cuPointerGetAttribute(void *data, int attribute, uint64_t pointer) {
  if (attribute == 3) *(uint64_t *)data = pointer;
  return 0;
}
CUresult cuPointerGetAttributes(unsigned count, int *attributes, void **data, uint64_t pointer) { return 0; }
CUresult cuTensorMapEncodeTiled(void *map, ...) { return 0; }
CUresult cuTensorMapEncodeIm2col(void *map, ...) { return 0; }
CUresult cuStreamIsCapturing(void *stream, int *status) { *status = 0; return 0; }

CUresult cuLaunchKernelEx(const NullLaunchConfig *config, void *function, void **params, void **extra) {
  NullLaunch *record = &records[launch_count % NULL_RECORDS];
  record->grid[0] = config->gridDimX; record->grid[1] = config->gridDimY; record->grid[2] = config->gridDimZ;
  record->block[0] = config->blockDimX; record->block[1] = config->blockDimY; record->block[2] = config->blockDimZ;
  record->shared_bytes = config->sharedMemBytes;
  const NullFunction *kernel = (const NullFunction *)function;
  strncpy(record->name, kernel ? kernel->name : "", NULL_NAME - 1);
  record->name[NULL_NAME - 1] = 0;
  record->param_bytes = 0;
  for (int i = 0; kernel && params && i < kernel->param_count; ++i) {
    unsigned size = kernel->param_sizes[i];
    if (record->param_bytes + size > NULL_PARAM_BYTES) break;
    memcpy(record->params + record->param_bytes, params[i], size);
    record->param_bytes += size;
  }
  ++launch_count;
  return 0;
}
