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
enum { NULL_RECORDS = 4096, NULL_NAME = 96, NULL_FUNCTIONS = 512 };

typedef struct {
  unsigned grid[3], block[3], shared_bytes;
  char name[NULL_NAME];
} NullLaunch;

/* the leading fields of CUlaunchConfig (cuda.h) */
typedef struct {
  unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
} NullLaunchConfig;

static int device_major = 9, device_minor = 0, device_sms = 132;
static char function_names[NULL_FUNCTIONS][NULL_NAME];
static int function_count;
static int context_token, module_token;
static long launch_count;
static NullLaunch records[NULL_RECORDS];

/* ---- what the loader calls ---- */
void null_set_device(int major, int minor, int sms) { device_major = major; device_minor = minor; device_sms = sms; }
long null_launch_count(void) { return launch_count; }
const NullLaunch *null_launch_record(long index) {
  if (index < 0 || index >= launch_count || launch_count - index > NULL_RECORDS) return 0;
  return &records[index % NULL_RECORDS];
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
CUresult cuModuleLoadData(void **module, const void *image) { *module = &module_token; return 0; }
CUresult cuModuleUnload(void *module) { return 0; }

/* a function handle is the address of its name, so that launches can be told apart */
CUresult cuModuleGetFunction(void **function, void *module, const char *name) {
  for (int i = 0; i < function_count; ++i)
    if (strncmp(function_names[i], name, NULL_NAME - 1) == 0) { *function = function_names[i]; return 0; }
  int slot = function_count < NULL_FUNCTIONS ? function_count++ : NULL_FUNCTIONS - 1;
  strncpy(function_names[slot], name, NULL_NAME - 1);
  *function = function_names[slot];
  return 0;
}

CUresult cuOccupancyMaxActiveClusters(int *clusters, void *function, const void *config) { *clusters = 1; return 0; }

/* CU_POINTER_ATTRIBUTE_DEVICE_POINTER (2): the device address of a pointer is the pointer itself */
CUresult cuPointerGetAttribute(void *data, int attribute, uint64_t pointer) {
  if (attribute == 2) *(uint64_t *)data = pointer;
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
  strncpy(record->name, function ? (const char *)function : "", NULL_NAME - 1);
  record->name[NULL_NAME - 1] = 0;
  ++launch_count;
  return 0;
}
