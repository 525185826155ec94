// A host (CPU) stand-in for the slice of AscendCL, aclnn and HCCL that src/ascend/bindings.ts declares, for tests.
// It checks the call protocol and the tensor layouts and computes every op with plain C loops (the math of the host
// backend's Ref kernels); it says nothing about the numerics of the real Ascend kernels.
//
// Behaviour that mirrors the real runtime and is checked here:
//   - aclInit once per process, aclrtSetDevice before memory/streams; device memory = host malloc, tracked by address.
//   - aclrtMemcpy is synchronous and NOT ordered with streams (as documented): kernels are queued on their stream at
//     launch and run only at aclrtSynchronizeStream, so a caller that reads results before synchronizing, or
//     overwrites / frees memory a queued kernel still uses, sees stale data or a kernel fault.
//   - two-phase aclnn protocol: ...GetWorkspaceSize validates and returns an executor plus a workspace size; the launch
//     consumes the executor exactly once and fails when given a smaller workspace than it asked for.
//   - every tensor view (dims, strides, offset) must lie inside its storage and inside a live device allocation.
//   - aclDestroyTensorList destroys the tensors in the list (CANN doc: they must not be destroyed again).
//   - threads: every exported call holds one process-wide mutex (ranks may be worker threads calling at once); the
//     current device and the recent error message are per thread, as in AscendCL.
//   - HCCL: a rank's all-reduce task, when its stream synchronizes, waits until every rank's task of that round has
//     run (a rendezvous, as the real collective blocks inside each stream) unless a rank still missing was set up on
//     the calling thread (one thread driving several ranks cannot wait for itself: its sum then completes when the
//     last rank's stream runs). A wait ends with a fault when a missing rank destroys its communicator or after
//     HCCL_EXEC_TIMEOUT seconds (default STANDIN_HCCL_TIMEOUT_S).
// Test controls (not part of any Huawei API): standin_reset, standin_fail_next, standin_fail_call (per device, after
// a number of calls), the W8A16_STANDIN_FAIL variable (the same, read at load, for child processes),
// standin_set_mem_limit, standin_log_json / standin_log_clear (every op's descriptors), standin_stats_json (live
// handles, bytes, counters).
// Where a real Atlas A2 kernel rejects a dtype this stand-in accepts (FLOAT activations, FLOAT KV), the op log marks
// the call with "a2Unsupported" so tests and docs can say so.

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

typedef int32_t aclError;
typedef int32_t aclnnStatus;
typedef int32_t HcclResult;

// Status codes as the CANN headers define them (acl_base.h, aclnn return codes, hccl_types.h).
enum {
  ACL_SUCCESS = 0,
  ACL_ERROR_INVALID_PARAM = 100000,
  ACL_ERROR_UNINITIALIZE = 100001,
  ACL_ERROR_REPEAT_INITIALIZE = 100002,
  ACL_ERROR_RT_CONTEXT_NULL = 107002,
  ACL_ERROR_RT_MEMORY_ALLOCATION = 207001,
  ACL_ERROR_RT_AICORE_EXCEPTION = 507015, // used here for a kernel that faults when it finally runs
  ACLNN_ERR_PARAM_NULLPTR = 161001,
  ACLNN_ERR_PARAM_INVALID = 161002,
  ACLNN_ERR_RUNTIME_ERROR = 361001,
};
enum { HCCL_SUCCESS = 0, HCCL_E_PARA = 1, HCCL_E_PTR = 2, HCCL_E_NOT_SUPPORT = 5 };

// aclDataType values (acl_base.h)
enum { DT_F32 = 0, DT_F16 = 1, DT_I8 = 2, DT_I32 = 3, DT_U8 = 4, DT_I64 = 9, DT_BOOL = 12, DT_BF16 = 27 };
enum { FMT_ND = 2 };
enum { MEMCPY_H2H = 0, MEMCPY_H2D = 1, MEMCPY_D2H = 2, MEMCPY_D2D = 3 };
// HcclDataType values (hccl_types.h)
enum { HCCL_FP16 = 3, HCCL_FP32 = 4, HCCL_BF16 = 11 };

#define MAX_DIMS 8

// One lock for all state, taken by every exported function (none calls another) and released on every return.
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static inline void guard_release(int *unused) {
  (void)unused;
  pthread_mutex_unlock(&g_mu);
}
#define GUARD() __attribute__((cleanup(guard_release), unused)) int guard_ = pthread_mutex_lock(&g_mu)

// ---------------------------------------------------------------------------------------------------------------
// error messages, failure injection, op log
// ---------------------------------------------------------------------------------------------------------------

static __thread char g_err[2048];
static __thread char g_err_out[2048];

static void set_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof g_err, fmt, ap);
  va_end(ap);
}

EXPORT const char *aclGetRecentErrMsg(void) {
  GUARD();
  if (!g_err[0]) return NULL;
  memcpy(g_err_out, g_err, sizeof g_err);
  g_err[0] = 0;
  return g_err_out;
}

#define MAX_INJECT 16
static struct {
  char fn[96];
  int status;
  int device; // -1: any device
  long skip;  // matching calls to let through first
} g_inject[MAX_INJECT];
static int g_ninject;
static __thread int g_device = -1; // this thread's current device (aclrtSetDevice is per thread)

static void add_inject(const char *fn, int status, int device, long skip) {
  if (g_ninject >= MAX_INJECT) return;
  snprintf(g_inject[g_ninject].fn, sizeof g_inject[0].fn, "%s", fn);
  g_inject[g_ninject].status = status;
  g_inject[g_ninject].device = device;
  g_inject[g_ninject].skip = skip;
  g_ninject++;
}

EXPORT void standin_fail_next(const char *fn, int status) {
  GUARD();
  add_inject(fn, status, -1, 0);
}

// Call `skip` + 1 of `fn` made on `device` (-1: any; for aclrtSetDevice the device asked for) returns `status`.
EXPORT void standin_fail_call(const char *fn, int status, int device, long skip) {
  GUARD();
  add_inject(fn, status, device, skip);
}

// W8A16_STANDIN_FAIL="fn:status[@device][+skip],...": the same injections for a process the test cannot reach.
__attribute__((constructor)) static void inject_from_env(void) {
  const char *spec = getenv("W8A16_STANDIN_FAIL");
  if (!spec) return;
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", spec);
  for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
    char *colon = strchr(item, ':');
    if (!colon) continue;
    *colon = 0;
    char *rest = colon + 1;
    int status = (int)strtol(rest, &rest, 10), device = -1;
    long skip = 0;
    if (*rest == '@') device = (int)strtol(rest + 1, &rest, 10);
    if (*rest == '+') skip = strtol(rest + 1, &rest, 10);
    add_inject(item, status, device, skip);
  }
}

// Returns the injected status for `fn` on `device` (and consumes it), or 0.
static int injected_on(const char *fn, int device) {
  for (int i = 0; i < g_ninject; i++) {
    if (strcmp(g_inject[i].fn, fn) != 0 || (g_inject[i].device >= 0 && g_inject[i].device != device)) continue;
    if (g_inject[i].skip > 0) {
      g_inject[i].skip--;
      continue;
    }
    int st = g_inject[i].status;
    memmove(&g_inject[i], &g_inject[i + 1], (size_t)(g_ninject - i - 1) * sizeof g_inject[0]);
    g_ninject--;
    if (device >= 0) set_err("stand-in: injected failure of %s on device %d (status %d)", fn, device, st);
    else set_err("stand-in: injected failure of %s (status %d)", fn, st);
    return st;
  }
  return 0;
}

static int injected(const char *fn) { return injected_on(fn, g_device); }

#define INJECT(name)                      \
  do {                                    \
    int st_ = injected(name);             \
    if (st_) return st_;                  \
  } while (0)

// growable text buffer for the JSON op log and stats
typedef struct {
  char *p;
  size_t len, cap;
} Buf;
static Buf g_log;
static Buf g_stats;

static void bput(Buf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    b->p = realloc(b->p, cap);
    b->cap = cap;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// runtime state: init, device, memory, streams
// ---------------------------------------------------------------------------------------------------------------

static bool g_inited;

typedef struct {
  char *ptr;
  size_t size;
} Alloc;
static Alloc *g_allocs;
static size_t g_nallocs, g_cap_allocs;
static size_t g_inuse, g_peak, g_limit;
static long g_n_malloc, g_n_free, g_n_h2d, g_n_d2h, g_n_d2d, g_n_sync, g_n_launch;

static const Alloc *find_alloc(const void *p, size_t len) {
  const char *c = p;
  for (size_t i = 0; i < g_nallocs; i++) {
    if (c >= g_allocs[i].ptr && c + len <= g_allocs[i].ptr + g_allocs[i].size) return &g_allocs[i];
  }
  return NULL;
}

EXPORT aclError aclInit(const char *configPath) {
  GUARD();
  (void)configPath;
  INJECT("aclInit");
  if (g_inited) {
    set_err("aclInit: already initialized in this process");
    return ACL_ERROR_REPEAT_INITIALIZE;
  }
  g_inited = true;
  return ACL_SUCCESS;
}

EXPORT aclError aclFinalize(void) {
  GUARD();
  INJECT("aclFinalize");
  if (!g_inited) {
    set_err("aclFinalize: aclInit was not called");
    return ACL_ERROR_UNINITIALIZE;
  }
  g_inited = false;
  g_device = -1;
  return ACL_SUCCESS;
}

EXPORT aclError aclrtSetDevice(int32_t deviceId) {
  GUARD();
  int st_ = injected_on("aclrtSetDevice", deviceId);
  if (st_) return st_;
  if (!g_inited) {
    set_err("aclrtSetDevice: aclInit was not called");
    return ACL_ERROR_UNINITIALIZE;
  }
  if (deviceId < 0 || deviceId > 7) {
    set_err("aclrtSetDevice: device %d does not exist (the stand-in has devices 0..7)", deviceId);
    return ACL_ERROR_INVALID_PARAM;
  }
  g_device = deviceId;
  return ACL_SUCCESS;
}

EXPORT aclError aclrtResetDevice(int32_t deviceId) {
  GUARD();
  INJECT("aclrtResetDevice");
  if (!g_inited || g_device < 0) {
    set_err("aclrtResetDevice: no device set");
    return ACL_ERROR_RT_CONTEXT_NULL;
  }
  (void)deviceId;
  return ACL_SUCCESS;
}

static int need_device(const char *fn) {
  if (!g_inited) {
    set_err("%s: aclInit was not called", fn);
    return ACL_ERROR_UNINITIALIZE;
  }
  if (g_device < 0) {
    set_err("%s: no device set (call aclrtSetDevice first)", fn);
    return ACL_ERROR_RT_CONTEXT_NULL;
  }
  return 0;
}

EXPORT aclError aclrtMalloc(void **devPtr, size_t size, int policy) {
  GUARD();
  (void)policy;
  INJECT("aclrtMalloc");
  int st = need_device("aclrtMalloc");
  if (st) return st;
  if (!devPtr || size == 0) {
    set_err("aclrtMalloc: devPtr must be non-null and size > 0 (size %zu)", size);
    return ACL_ERROR_INVALID_PARAM;
  }
  if (g_limit && g_inuse + size > g_limit) {
    set_err("stand-in: out of device memory: %zu bytes requested, %zu in use, limit %zu", size, g_inuse, g_limit);
    return ACL_ERROR_RT_MEMORY_ALLOCATION;
  }
  char *p = malloc(size);
  if (!p) {
    set_err("stand-in: host malloc of %zu bytes failed", size);
    return ACL_ERROR_RT_MEMORY_ALLOCATION;
  }
  // Device memory starts as garbage: all-ones bytes read as NaN in every float type, so reading uninitialized
  // memory shows up in results.
  memset(p, 0xff, size);
  if (g_nallocs == g_cap_allocs) {
    g_cap_allocs = g_cap_allocs ? g_cap_allocs * 2 : 64;
    g_allocs = realloc(g_allocs, g_cap_allocs * sizeof *g_allocs);
  }
  g_allocs[g_nallocs++] = (Alloc){p, size};
  g_inuse += size;
  if (g_inuse > g_peak) g_peak = g_inuse;
  g_n_malloc++;
  *devPtr = p;
  return ACL_SUCCESS;
}

EXPORT aclError aclrtFree(void *devPtr) {
  GUARD();
  INJECT("aclrtFree");
  for (size_t i = 0; i < g_nallocs; i++) {
    if (g_allocs[i].ptr == devPtr) {
      g_inuse -= g_allocs[i].size;
      memset(devPtr, 0xee, g_allocs[i].size); // freed memory reads as garbage too
      free(devPtr);
      g_allocs[i] = g_allocs[--g_nallocs];
      g_n_free++;
      return ACL_SUCCESS;
    }
  }
  set_err("aclrtFree: %p is not a live device allocation", devPtr);
  return ACL_ERROR_INVALID_PARAM;
}

static aclError memcpy_check(const char *fn, void *dst, size_t destMax, const void *src, size_t count, int kind) {
  if (!dst || !src) {
    set_err("%s: null pointer", fn);
    return ACL_ERROR_INVALID_PARAM;
  }
  if (count > destMax) {
    set_err("%s: count %zu exceeds destMax %zu", fn, count, destMax);
    return ACL_ERROR_INVALID_PARAM;
  }
  bool dst_dev = kind == MEMCPY_H2D || kind == MEMCPY_D2D;
  bool src_dev = kind == MEMCPY_D2H || kind == MEMCPY_D2D;
  if (kind < 0 || kind > 3) {
    set_err("%s: unknown aclrtMemcpyKind %d", fn, kind);
    return ACL_ERROR_INVALID_PARAM;
  }
  if (dst_dev && !find_alloc(dst, count)) {
    set_err("%s: destination %p + %zu bytes is not inside a live device allocation", fn, dst, count);
    return ACL_ERROR_INVALID_PARAM;
  }
  if (src_dev && !find_alloc(src, count)) {
    set_err("%s: source %p + %zu bytes is not inside a live device allocation", fn, src, count);
    return ACL_ERROR_INVALID_PARAM;
  }
  if (!dst_dev && find_alloc(dst, 1)) {
    set_err("%s: kind %d says the destination is host memory, but %p is device memory", fn, kind, dst);
    return ACL_ERROR_INVALID_PARAM;
  }
  if (!src_dev && find_alloc(src, 1)) {
    set_err("%s: kind %d says the source is host memory, but %p is device memory", fn, kind, src);
    return ACL_ERROR_INVALID_PARAM;
  }
  return 0;
}

EXPORT aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, int kind) {
  GUARD();
  INJECT("aclrtMemcpy");
  int st = need_device("aclrtMemcpy");
  if (st) return st;
  st = memcpy_check("aclrtMemcpy", dst, destMax, src, count, kind);
  if (st) return st;
  memmove(dst, src, count);
  if (kind == MEMCPY_H2D) g_n_h2d++;
  if (kind == MEMCPY_D2H) g_n_d2h++;
  if (kind == MEMCPY_D2D) g_n_d2d++;
  return ACL_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------------------
// aclTensor, aclIntArray, aclScalar, aclTensorList (nnopbase)
// ---------------------------------------------------------------------------------------------------------------

#define MAGIC_TENSOR 0x54534e54u
#define MAGIC_LIST 0x5453494cu
#define MAGIC_IARR 0x52524149u
#define MAGIC_SCALAR 0x4c414353u
#define MAGIC_EXEC 0x43455845u
#define MAGIC_STREAM 0x4d525453u

typedef struct aclTensor {
  uint32_t magic;
  int dtype, format, ndim, sndim;
  int64_t dims[MAX_DIMS], strides[MAX_DIMS], sdims[MAX_DIMS];
  int64_t offset;
  char *data;
  int owned_by_list;
} aclTensor;

typedef struct {
  uint32_t magic;
  uint64_t n;
  aclTensor **items;
} aclTensorList;

typedef struct {
  uint32_t magic;
  uint64_t n;
  int64_t *v;
} aclIntArray;

typedef struct {
  uint32_t magic;
  int dtype;
  double value;
} aclScalar;

static long g_live_tensors, g_live_lists, g_live_iarrays, g_live_scalars, g_live_execs, g_queued;

static size_t dsize(int dt) {
  switch (dt) {
    case DT_F32: case DT_I32: return 4;
    case DT_F16: case DT_BF16: return 2;
    case DT_I8: case DT_U8: case DT_BOOL: return 1;
    case DT_I64: return 8;
    default: return 0;
  }
}

EXPORT aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, int dataType, const int64_t *stride,
                                  int64_t offset, int format, const int64_t *storageDims, uint64_t storageDimsNum,
                                  void *tensorData) {
  GUARD();
  if (injected("aclCreateTensor")) return NULL;
  if (viewDimsNum > MAX_DIMS || storageDimsNum > MAX_DIMS || (viewDimsNum && (!viewDims || !stride)) ||
      (storageDimsNum && !storageDims)) {
    set_err("aclCreateTensor: bad dims (view %llu, storage %llu)", (unsigned long long)viewDimsNum,
            (unsigned long long)storageDimsNum);
    return NULL;
  }
  if (!dsize(dataType)) {
    set_err("aclCreateTensor: aclDataType %d is not one the stand-in knows", dataType);
    return NULL;
  }
  if (offset < 0) {
    set_err("aclCreateTensor: negative offset %lld", (long long)offset);
    return NULL;
  }
  aclTensor *t = calloc(1, sizeof *t);
  t->magic = MAGIC_TENSOR;
  t->dtype = dataType;
  t->format = format;
  t->ndim = (int)viewDimsNum;
  t->sndim = (int)storageDimsNum;
  for (int i = 0; i < t->ndim; i++) {
    t->dims[i] = viewDims[i];
    t->strides[i] = stride[i];
  }
  for (int i = 0; i < t->sndim; i++) t->sdims[i] = storageDims[i];
  t->offset = offset;
  t->data = tensorData;
  g_live_tensors++;
  return t;
}

static bool is_tensor(const aclTensor *t) { return t && t->magic == MAGIC_TENSOR; }

static void destroy_tensor(aclTensor *t) {
  t->magic = 0;
  free(t);
  g_live_tensors--;
}

EXPORT aclnnStatus aclDestroyTensor(const aclTensor *tensor) {
  GUARD();
  INJECT("aclDestroyTensor");
  aclTensor *t = (aclTensor *)tensor;
  if (!is_tensor(t)) {
    set_err("aclDestroyTensor: %p is not a live aclTensor", (void *)tensor);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (t->owned_by_list) {
    set_err("aclDestroyTensor: this aclTensor belongs to an aclTensorList, which destroys it");
    return ACLNN_ERR_PARAM_INVALID;
  }
  destroy_tensor(t);
  return 0;
}

EXPORT aclTensorList *aclCreateTensorList(aclTensor *const *value, uint64_t size) {
  GUARD();
  if (injected("aclCreateTensorList")) return NULL;
  if (!value || size == 0) {
    set_err("aclCreateTensorList: empty list");
    return NULL;
  }
  for (uint64_t i = 0; i < size; i++) {
    if (!is_tensor(value[i]) || value[i]->owned_by_list) {
      set_err("aclCreateTensorList: item %llu is not a free aclTensor", (unsigned long long)i);
      return NULL;
    }
  }
  aclTensorList *l = calloc(1, sizeof *l);
  l->magic = MAGIC_LIST;
  l->n = size;
  l->items = calloc(size, sizeof *l->items);
  for (uint64_t i = 0; i < size; i++) {
    l->items[i] = value[i];
    value[i]->owned_by_list = 1;
  }
  g_live_lists++;
  return l;
}

EXPORT aclnnStatus aclDestroyTensorList(const aclTensorList *array) {
  GUARD();
  INJECT("aclDestroyTensorList");
  aclTensorList *l = (aclTensorList *)array;
  if (!l || l->magic != MAGIC_LIST) {
    set_err("aclDestroyTensorList: not a live aclTensorList");
    return ACLNN_ERR_PARAM_INVALID;
  }
  for (uint64_t i = 0; i < l->n; i++) destroy_tensor(l->items[i]);
  free(l->items);
  l->magic = 0;
  free(l);
  g_live_lists--;
  return 0;
}

EXPORT aclIntArray *aclCreateIntArray(const int64_t *value, uint64_t size) {
  GUARD();
  if (injected("aclCreateIntArray")) return NULL;
  if (size && !value) {
    set_err("aclCreateIntArray: null values");
    return NULL;
  }
  aclIntArray *a = calloc(1, sizeof *a);
  a->magic = MAGIC_IARR;
  a->n = size;
  a->v = calloc(size ? size : 1, sizeof *a->v);
  if (size) memcpy(a->v, value, size * sizeof *value);
  g_live_iarrays++;
  return a;
}

EXPORT aclnnStatus aclDestroyIntArray(const aclIntArray *array) {
  GUARD();
  INJECT("aclDestroyIntArray");
  aclIntArray *a = (aclIntArray *)array;
  if (!a || a->magic != MAGIC_IARR) {
    set_err("aclDestroyIntArray: not a live aclIntArray");
    return ACLNN_ERR_PARAM_INVALID;
  }
  a->magic = 0;
  free(a->v);
  free(a);
  g_live_iarrays--;
  return 0;
}

EXPORT aclScalar *aclCreateScalar(void *value, int dataType) {
  GUARD();
  if (injected("aclCreateScalar")) return NULL;
  if (!value || (dataType != DT_F32 && dataType != DT_I64 && dataType != DT_I32)) {
    set_err("aclCreateScalar: need a value of FLOAT, INT32 or INT64, got dtype %d", dataType);
    return NULL;
  }
  aclScalar *s = calloc(1, sizeof *s);
  s->magic = MAGIC_SCALAR;
  s->dtype = dataType;
  s->value = dataType == DT_F32 ? *(float *)value : dataType == DT_I32 ? *(int32_t *)value : (double)*(int64_t *)value;
  g_live_scalars++;
  return s;
}

EXPORT aclnnStatus aclDestroyScalar(const aclScalar *scalar) {
  GUARD();
  INJECT("aclDestroyScalar");
  aclScalar *s = (aclScalar *)scalar;
  if (!s || s->magic != MAGIC_SCALAR) {
    set_err("aclDestroyScalar: not a live aclScalar");
    return ACLNN_ERR_PARAM_INVALID;
  }
  s->magic = 0;
  free(s);
  g_live_scalars--;
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// element access and layout checks
// ---------------------------------------------------------------------------------------------------------------

static float h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
  if (e == 0) {
    float v = (float)m * 5.9604644775390625e-8f; // 2^-24
    return sign ? -v : v;
  }
  if (e == 31) bits = sign | 0x7f800000u | (m << 13);
  else bits = sign | ((e + 112) << 23) | (m << 13);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t f2h(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int e = (int)((x >> 23) & 0xff);
  uint32_t m = x & 0x7fffff;
  if (e == 0xff) return (uint16_t)(sign | 0x7c00 | (m ? 0x200 : 0));
  int exp = e - 127 + 15;
  if (exp >= 31) return (uint16_t)(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return (uint16_t)sign;
    m |= 0x800000;
    int shift = 14 - exp;
    uint32_t half = 1u << (shift - 1), r = m >> shift, rest = m & ((1u << shift) - 1);
    if (rest > half || (rest == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = m >> 13, rest = m & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (r & 1))) {
    r++;
    if (r == 0x400) {
      r = 0;
      exp++;
      if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    }
  }
  return (uint16_t)(sign | ((uint32_t)exp << 10) | r);
}

static float b2f(uint16_t b) {
  uint32_t x = (uint32_t)b << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static uint16_t f2b(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7f800000u) == 0x7f800000u && (x & 0x7fffff)) return (uint16_t)((x >> 16) | 0x40);
  return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

// value of element at element offset `e` (already including the view offset)
static double rd(const aclTensor *t, int64_t e) {
  const char *p = t->data + e * (int64_t)dsize(t->dtype);
  switch (t->dtype) {
    case DT_F32: { float v; memcpy(&v, p, 4); return v; }
    case DT_F16: { uint16_t v; memcpy(&v, p, 2); return h2f(v); }
    case DT_BF16: { uint16_t v; memcpy(&v, p, 2); return b2f(v); }
    case DT_I8: return *(const int8_t *)p;
    case DT_U8: case DT_BOOL: return *(const uint8_t *)p;
    case DT_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case DT_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    default: return NAN;
  }
}

// store `v` rounded to the tensor's dtype (floats: to f32 first, as every kernel here computes in f32 or wider)
static void wr(const aclTensor *t, int64_t e, double v) {
  char *p = t->data + e * (int64_t)dsize(t->dtype);
  switch (t->dtype) {
    case DT_F32: { float f = (float)v; memcpy(p, &f, 4); break; }
    case DT_F16: { uint16_t h = f2h((float)v); memcpy(p, &h, 2); break; }
    case DT_BF16: { uint16_t h = f2b((float)v); memcpy(p, &h, 2); break; }
    case DT_I8: *(int8_t *)p = (int8_t)v; break;
    case DT_U8: case DT_BOOL: *(uint8_t *)p = (uint8_t)v; break;
    case DT_I32: { int32_t i = (int32_t)v; memcpy(p, &i, 4); break; }
    case DT_I64: { int64_t i = (int64_t)v; memcpy(p, &i, 8); break; }
  }
}

static int64_t at2(const aclTensor *t, int64_t i, int64_t j) { return t->offset + i * t->strides[0] + j * t->strides[1]; }

static int64_t numel(const aclTensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->dims[i];
  return n;
}

static bool contiguous(const aclTensor *t) {
  int64_t s = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->dims[i] != 1 && t->strides[i] != s) return false;
    s *= t->dims[i];
  }
  return true;
}

// The view must stay inside its storage and the storage inside a live device allocation.
static int check_view(const char *op, const char *arg, const aclTensor *t) {
  if (!is_tensor(t)) {
    set_err("%s: %s is not a live aclTensor", op, arg);
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  int64_t storage = 1, maxoff = t->offset;
  for (int i = 0; i < t->sndim; i++) storage *= t->sdims[i];
  for (int i = 0; i < t->ndim; i++) {
    if (t->dims[i] <= 0 || t->strides[i] < 0) {
      set_err("%s: %s dim %d is %lld with stride %lld", op, arg, i, (long long)t->dims[i], (long long)t->strides[i]);
      return ACLNN_ERR_PARAM_INVALID;
    }
    maxoff += (t->dims[i] - 1) * t->strides[i];
  }
  if (t->format != FMT_ND) {
    set_err("%s: %s has aclFormat %d, the stand-in (and this backend) use ND (2)", op, arg, t->format);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (maxoff >= storage) {
    set_err("%s: %s view reaches element %lld but its storage holds %lld", op, arg, (long long)maxoff,
            (long long)storage);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (!find_alloc(t->data, (size_t)storage * dsize(t->dtype))) {
    set_err("%s: %s storage (%p, %lld elements) is not inside a live device allocation", op, arg, (void *)t->data,
            (long long)storage);
    return ACLNN_ERR_PARAM_INVALID;
  }
  return 0;
}

static void log_tensor(const char *name, const aclTensor *t) {
  bput(&g_log, "\"%s\":", name);
  if (!t) {
    bput(&g_log, "null,");
    return;
  }
  bput(&g_log, "{\"dtype\":%d,\"format\":%d,\"dims\":[", t->dtype, t->format);
  for (int i = 0; i < t->ndim; i++) bput(&g_log, "%s%lld", i ? "," : "", (long long)t->dims[i]);
  bput(&g_log, "],\"strides\":[");
  for (int i = 0; i < t->ndim; i++) bput(&g_log, "%s%lld", i ? "," : "", (long long)t->strides[i]);
  bput(&g_log, "],\"offset\":%lld,\"storage\":[", (long long)t->offset);
  for (int i = 0; i < t->sndim; i++) bput(&g_log, "%s%lld", i ? "," : "", (long long)t->sdims[i]);
  bput(&g_log, "]},");
}

static void log_begin(const char *op) {
  if (g_log.len) bput(&g_log, ",");
  bput(&g_log, "{\"op\":\"%s\",\"args\":{", op);
}

static void log_end(int status, uint64_t ws, const char *a2) {
  if (g_log.p[g_log.len - 1] == ',') g_log.len--;
  bput(&g_log, "},\"status\":%d,\"workspace\":%llu", status, (unsigned long long)ws);
  if (a2) bput(&g_log, ",\"a2Unsupported\":\"%s\"", a2);
  bput(&g_log, "}");
}

// ---------------------------------------------------------------------------------------------------------------
// executors and streams: launches queue on the stream, aclrtSynchronizeStream runs them
// ---------------------------------------------------------------------------------------------------------------

enum {
  OP_WQBMM, OP_MATMUL, OP_RMSNORM, OP_ROPE, OP_FIA, OP_SCATTER_KV, OP_QUANTIZE, OP_SILU, OP_MUL, OP_ADD,
  OP_EMBEDDING, OP_INDEX_SELECT, OP_ARGMAX, OP_CAST, OP_COPY, OP_MEMSET, OP_ALLREDUCE
};

#define MAX_T 12
typedef struct Exec {
  uint32_t magic;
  int op;
  char name[64];
  uint64_t ws_need;
  aclTensor t[MAX_T]; // copies of the descriptors: the caller may destroy its handles right after launch
  bool has[MAX_T];
  int64_t i[8];
  double d[4];
  char s[2][16];
  int64_t *arr[2];
  uint64_t arrn[2];
  void *ws;
  void *p[4]; // raw pointers (memcpy, all-reduce)
  struct Exec *next;
} Exec;

typedef struct {
  uint32_t magic;
  Exec *head, *tail;
} Stream;

static Exec *new_exec(int op, const char *name) {
  Exec *x = calloc(1, sizeof *x);
  x->magic = MAGIC_EXEC;
  x->op = op;
  snprintf(x->name, sizeof x->name, "%s", name);
  g_live_execs++;
  return x;
}

static void free_exec(Exec *x) {
  free(x->arr[0]);
  free(x->arr[1]);
  x->magic = 0;
  free(x);
  g_live_execs--;
}

static void keep(Exec *x, int slot, const aclTensor *t) {
  if (t) {
    x->t[slot] = *t;
    x->has[slot] = true;
  }
}

static void keep_arr(Exec *x, int slot, const aclIntArray *a) {
  if (!a) return;
  x->arrn[slot] = a->n;
  x->arr[slot] = malloc((a->n ? a->n : 1) * sizeof(int64_t));
  memcpy(x->arr[slot], a->v, a->n * sizeof(int64_t));
}

EXPORT aclError aclrtCreateStream(void **stream) {
  GUARD();
  INJECT("aclrtCreateStream");
  int st = need_device("aclrtCreateStream");
  if (st) return st;
  Stream *s = calloc(1, sizeof *s);
  s->magic = MAGIC_STREAM;
  *stream = s;
  return ACL_SUCCESS;
}

static bool is_stream(const void *p) { return p && ((const Stream *)p)->magic == MAGIC_STREAM; }

static int run_exec(Exec *x);

EXPORT aclError aclrtSynchronizeStream(void *stream) {
  GUARD();
  INJECT("aclrtSynchronizeStream");
  if (!is_stream(stream)) {
    set_err("aclrtSynchronizeStream: not a live stream");
    return ACL_ERROR_INVALID_PARAM;
  }
  Stream *s = stream;
  int status = 0;
  g_n_sync++;
  while (s->head) {
    Exec *x = s->head;
    s->head = x->next;
    g_queued--;
    if (!status) status = run_exec(x); // after a fault the rest of the queue is dropped, as a failed stream would
    free_exec(x);
  }
  s->tail = NULL;
  return status;
}

EXPORT aclError aclrtDestroyStream(void *stream) {
  GUARD();
  INJECT("aclrtDestroyStream");
  if (!is_stream(stream)) {
    set_err("aclrtDestroyStream: not a live stream");
    return ACL_ERROR_INVALID_PARAM;
  }
  Stream *s = stream;
  if (s->head) {
    set_err("aclrtDestroyStream: %ld task(s) still queued; synchronize first", g_queued);
    return ACL_ERROR_INVALID_PARAM;
  }
  s->magic = 0;
  free(s);
  return ACL_SUCCESS;
}

static void enqueue(Stream *s, Exec *x) {
  x->next = NULL;
  if (s->tail) s->tail->next = x;
  else s->head = x;
  s->tail = x;
  g_queued++;
}

EXPORT aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, void *stream) {
  GUARD();
  INJECT("aclrtMemsetAsync");
  int st = need_device("aclrtMemsetAsync");
  if (st) return st;
  if (!is_stream(stream)) {
    set_err("aclrtMemsetAsync: not a live stream");
    return ACL_ERROR_INVALID_PARAM;
  }
  if (count > maxCount || !find_alloc(devPtr, count)) {
    set_err("aclrtMemsetAsync: %p + %zu bytes (maxCount %zu) is not inside a live device allocation", devPtr, count,
            maxCount);
    return ACL_ERROR_INVALID_PARAM;
  }
  Exec *x = new_exec(OP_MEMSET, "aclrtMemsetAsync");
  x->p[0] = devPtr;
  x->i[0] = (int64_t)count;
  x->i[1] = value;
  enqueue(stream, x);
  return ACL_SUCCESS;
}

// Second phase, common to every aclnn op: check the executor, the workspace and the stream, then queue.
static aclnnStatus launch(const char *op, void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  Exec *x = executor;
  int st = injected(op);
  if (st) {
    // An injected launch failure stands for a runtime fault: the executor is spent. (A launch refused for a bad
    // workspace or stream, below, leaves it live so the caller may retry.)
    if (x && x->magic == MAGIC_EXEC) free_exec(x);
    return st;
  }
  g_n_launch++;
  if (g_log.len) bput(&g_log, ",");
  bput(&g_log, "{\"launch\":\"%s\",\"workspaceSize\":%llu,\"workspaceNull\":%s}", op,
       (unsigned long long)workspaceSize, workspace ? "false" : "true");
  if (!x || x->magic != MAGIC_EXEC) {
    set_err("%s: executor is not a live aclOpExecutor (already launched, or never created)", op);
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  if (strcmp(x->name, op) != 0) {
    set_err("%s: executor was created by %sGetWorkspaceSize", op, x->name);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (workspaceSize < x->ws_need) {
    set_err("%s: workspace of %llu bytes given, %llu required by %sGetWorkspaceSize", op,
            (unsigned long long)workspaceSize, (unsigned long long)x->ws_need, op);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (x->ws_need && (!workspace || !find_alloc(workspace, x->ws_need))) {
    set_err("%s: workspace %p (+%llu bytes) is not inside a live device allocation", op, workspace,
            (unsigned long long)x->ws_need);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (!is_stream(stream)) {
    set_err("%s: not a live stream", op);
    return ACLNN_ERR_PARAM_INVALID;
  }
  x->ws = workspace;
  x->magic = MAGIC_EXEC + 1; // consumed: a second launch with the same executor fails
  enqueue(stream, x);
  return 0;
}

// First phase: hand out the executor.
static aclnnStatus finish_gws(Exec *x, uint64_t *workspaceSize, void **executor, const char *a2) {
  if (!workspaceSize || !executor) {
    set_err("%s: workspaceSize and executor must be non-null", x->name);
    log_end(ACLNN_ERR_PARAM_NULLPTR, 0, a2);
    free_exec(x);
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  *workspaceSize = x->ws_need;
  *executor = x;
  log_end(0, x->ws_need, a2);
  return 0;
}

static aclnnStatus fail_gws(Exec *x, int status, const char *a2) {
  log_end(status, 0, a2);
  free_exec(x);
  return status;
}

#define CHECK_VIEW(x, argname, t)                 \
  do {                                            \
    int s_ = check_view((x)->name, argname, t);   \
    if (s_) return fail_gws(x, s_, a2);           \
  } while (0)

#define REQUIRE(x, cond, ...)                  \
  do {                                         \
    if (!(cond)) {                             \
      set_err(__VA_ARGS__);                    \
      return fail_gws(x, ACLNN_ERR_PARAM_INVALID, a2); \
    }                                          \
  } while (0)

static bool is_float(int dt) { return dt == DT_F32 || dt == DT_F16 || dt == DT_BF16; }

// Kernel-time check: memory may have been freed between launch and synchronize.
static int still_live(const Exec *x) {
  for (int i = 0; i < MAX_T; i++) {
    if (!x->has[i]) continue;
    const aclTensor *t = &x->t[i];
    int64_t storage = 1;
    for (int k = 0; k < t->sndim; k++) storage *= t->sdims[k];
    if (!find_alloc(t->data, (size_t)storage * dsize(t->dtype))) {
      set_err("stand-in kernel fault in %s: tensor argument %d points at freed device memory", x->name, i);
      return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
  }
  if (x->ws_need && !find_alloc(x->ws, x->ws_need)) {
    set_err("stand-in kernel fault in %s: its workspace was freed before the kernel ran", x->name);
    return ACL_ERROR_RT_AICORE_EXCEPTION;
  }
  return 0;
}

// The kernels "use" their workspace: scribble over it, so sharing it with live data shows up.
static void scribble(const Exec *x) {
  if (x->ws_need) memset(x->ws, 0xa5, x->ws_need);
}

// ---------------------------------------------------------------------------------------------------------------
// aclnnWeightQuantBatchMatmulV2: y = x @ ((weight + antiquantOffset) * antiquantScale) + bias
// ---------------------------------------------------------------------------------------------------------------

EXPORT aclnnStatus aclnnWeightQuantBatchMatmulV2GetWorkspaceSize(
    const aclTensor *x, const aclTensor *weight, const aclTensor *antiquantScale, const aclTensor *antiquantOffset,
    const aclTensor *quantScale, const aclTensor *quantOffset, const aclTensor *bias, int antiquantGroupSize,
    const aclTensor *y, uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnWeightQuantBatchMatmulV2GetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnWeightQuantBatchMatmulV2");
  log_tensor("x", x), log_tensor("weight", weight), log_tensor("antiquantScale", antiquantScale);
  log_tensor("antiquantOffset", antiquantOffset), log_tensor("bias", bias), log_tensor("y", y);
  bput(&g_log, "\"antiquantGroupSize\":%d,", antiquantGroupSize);
  Exec *e = new_exec(OP_WQBMM, "aclnnWeightQuantBatchMatmulV2");
  CHECK_VIEW(e, "x", x);
  CHECK_VIEW(e, "weight", weight);
  CHECK_VIEW(e, "antiquantScale", antiquantScale);
  CHECK_VIEW(e, "y", y);
  if (antiquantOffset) CHECK_VIEW(e, "antiquantOffset", antiquantOffset);
  if (bias) CHECK_VIEW(e, "bias", bias);
  if (x->dtype == DT_F32) a2 = "x FLOAT (A2 takes FLOAT16/BFLOAT16)";
  REQUIRE(e, !quantScale && !quantOffset, "%s: output quantization is not used by this backend", e->name);
  REQUIRE(e, antiquantGroupSize == 0, "%s: antiquantGroupSize %d, only per-channel (0) is modelled", e->name,
          antiquantGroupSize);
  REQUIRE(e, x->ndim == 2 && weight->ndim == 2 && y->ndim == 2, "%s: x, weight, y must be 2-D", e->name);
  int64_t m = x->dims[0], k = x->dims[1], n = weight->dims[1];
  REQUIRE(e, weight->dims[0] == k, "%s: weight is (%lld, %lld), expected (k=%lld, n)", e->name,
          (long long)weight->dims[0], (long long)n, (long long)k);
  REQUIRE(e, k >= 1 && k <= 65535 && n >= 1 && n <= 65535, "%s: k=%lld and n=%lld must lie in [1, 65535]", e->name,
          (long long)k, (long long)n);
  REQUIRE(e, y->dims[0] == m && y->dims[1] == n, "%s: y must be (%lld, %lld)", e->name, (long long)m, (long long)n);
  REQUIRE(e, weight->dtype == DT_I8, "%s: weight dtype %d, expected INT8 (2)", e->name, weight->dtype);
  REQUIRE(e, is_float(x->dtype) && y->dtype == x->dtype, "%s: x and y must share a float dtype", e->name);
  REQUIRE(e, contiguous(x) && contiguous(y), "%s: x and y must be contiguous", e->name);
  bool transposed = weight->strides[0] == 1 && weight->strides[1] == k;
  REQUIRE(e, contiguous(weight) || transposed, "%s: weight must be contiguous (k, n) or a transposed (n, k) view",
          e->name);
  int64_t sn = numel(antiquantScale);
  REQUIRE(e, sn == n && (antiquantScale->ndim == 1 || (antiquantScale->ndim == 2 && antiquantScale->dims[0] == 1)),
          "%s: antiquantScale must be (n,) or (1, n) for per-channel", e->name);
  REQUIRE(e, antiquantScale->dtype == x->dtype, "%s: antiquantScale dtype %d must equal x dtype %d", e->name,
          antiquantScale->dtype, x->dtype);
  if (antiquantOffset) {
    REQUIRE(e, antiquantOffset->ndim == antiquantScale->ndim && numel(antiquantOffset) == n &&
                   antiquantOffset->dtype == x->dtype,
            "%s: antiquantOffset must match antiquantScale in shape and dtype", e->name);
  }
  if (bias) {
    int want = x->dtype == DT_F16 ? DT_F16 : DT_F32; // doc: FLOAT16 with a FLOAT16 x, FLOAT with a BFLOAT16 x
    REQUIRE(e, numel(bias) == n && bias->dtype == want, "%s: bias must be (n,) of dtype %d", e->name, want);
  }
  keep(e, 0, x), keep(e, 1, weight), keep(e, 2, antiquantScale), keep(e, 3, antiquantOffset), keep(e, 4, bias);
  keep(e, 5, y);
  e->ws_need = 4096 + (uint64_t)(m * n) * 4; // a pretend f32 accumulator: real sizes come from the tiling
  return finish_gws(e, workspaceSize, executor, a2);
}

static int64_t vec_at(const aclTensor *t, int64_t j) { return t->offset + j * t->strides[t->ndim - 1]; }

static void run_wqbmm(Exec *e) {
  const aclTensor *x = &e->t[0], *w = &e->t[1], *sc = &e->t[2], *of = e->has[3] ? &e->t[3] : NULL;
  const aclTensor *b = e->has[4] ? &e->t[4] : NULL, *y = &e->t[5];
  int64_t m = x->dims[0], k = x->dims[1], n = w->dims[1];
  float *deq = malloc((size_t)k * sizeof *deq);
  for (int64_t j = 0; j < n; j++) {
    double s = rd(sc, vec_at(sc, j)), o = of ? rd(of, vec_at(of, j)) : 0;
    for (int64_t kk = 0; kk < k; kk++) deq[kk] = (float)((rd(w, at2(w, kk, j)) + o) * s);
    for (int64_t i = 0; i < m; i++) {
      double acc = 0;
      for (int64_t kk = 0; kk < k; kk++) acc += rd(x, at2(x, i, kk)) * deq[kk];
      wr(y, at2(y, i, j), acc + (b ? rd(b, vec_at(b, j)) : 0));
    }
  }
  free(deq);
}

EXPORT aclnnStatus aclnnWeightQuantBatchMatmulV2(void *workspace, uint64_t workspaceSize, void *executor,
                                                 void *stream) {
  GUARD();
  return launch("aclnnWeightQuantBatchMatmulV2", workspace, workspaceSize, executor, stream);
}

// ---------------------------------------------------------------------------------------------------------------
// aclnnMatmul: out = self @ mat2
// ---------------------------------------------------------------------------------------------------------------

EXPORT aclnnStatus aclnnMatmulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out,
                                               int8_t cubeMathType, uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnMatmulGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnMatmul");
  log_tensor("self", self), log_tensor("mat2", mat2), log_tensor("out", out);
  bput(&g_log, "\"cubeMathType\":%d,", cubeMathType);
  Exec *e = new_exec(OP_MATMUL, "aclnnMatmul");
  CHECK_VIEW(e, "self", self);
  CHECK_VIEW(e, "mat2", mat2);
  CHECK_VIEW(e, "out", out);
  REQUIRE(e, self->ndim == 2 && mat2->ndim == 2 && out->ndim == 2, "%s: 2-D operands only", e->name);
  REQUIRE(e, self->dims[1] == mat2->dims[0] && out->dims[0] == self->dims[0] && out->dims[1] == mat2->dims[1],
          "%s: (%lld, %lld) @ (%lld, %lld) cannot give (%lld, %lld)", e->name, (long long)self->dims[0],
          (long long)self->dims[1], (long long)mat2->dims[0], (long long)mat2->dims[1], (long long)out->dims[0],
          (long long)out->dims[1]);
  REQUIRE(e, is_float(self->dtype) && mat2->dtype == self->dtype && out->dtype == self->dtype,
          "%s: self, mat2, out must share one float dtype (%d, %d, %d)", e->name, self->dtype, mat2->dtype,
          out->dtype);
  REQUIRE(e, cubeMathType >= 0 && cubeMathType <= 3, "%s: cubeMathType %d", e->name, cubeMathType);
  keep(e, 0, self), keep(e, 1, mat2), keep(e, 2, out);
  e->ws_need = (uint64_t)(out->dims[0] * out->dims[1]) * 4;
  return finish_gws(e, workspaceSize, executor, a2);
}

static void run_matmul(Exec *e) {
  const aclTensor *a = &e->t[0], *b = &e->t[1], *o = &e->t[2];
  int64_t m = a->dims[0], k = a->dims[1], n = b->dims[1];
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0;
      for (int64_t kk = 0; kk < k; kk++) acc += rd(a, at2(a, i, kk)) * rd(b, at2(b, kk, j));
      wr(o, at2(o, i, j), acc);
    }
}

EXPORT aclnnStatus aclnnMatmul(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnMatmul", workspace, workspaceSize, executor, stream);
}

// ---------------------------------------------------------------------------------------------------------------
// aclnnRmsNorm: y = x / sqrt(mean(x^2) + eps) * gamma, rstd = 1/sqrt(mean(x^2) + eps)
// ---------------------------------------------------------------------------------------------------------------

EXPORT aclnnStatus aclnnRmsNormGetWorkspaceSize(const aclTensor *x, const aclTensor *gamma, double epsilon,
                                                const aclTensor *yOut, const aclTensor *rstdOut,
                                                uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnRmsNormGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnRmsNorm");
  log_tensor("x", x), log_tensor("gamma", gamma), log_tensor("yOut", yOut), log_tensor("rstdOut", rstdOut);
  bput(&g_log, "\"epsilon\":%.9g,", epsilon);
  Exec *e = new_exec(OP_RMSNORM, "aclnnRmsNorm");
  CHECK_VIEW(e, "x", x);
  CHECK_VIEW(e, "gamma", gamma);
  CHECK_VIEW(e, "yOut", yOut);
  CHECK_VIEW(e, "rstdOut", rstdOut);
  REQUIRE(e, x->ndim == 2 && yOut->ndim == 2 && gamma->ndim == 1, "%s: x, y (T, H) and gamma (H) expected", e->name);
  REQUIRE(e, gamma->dims[0] == x->dims[1] && yOut->dims[0] == x->dims[0] && yOut->dims[1] == x->dims[1],
          "%s: shapes of x, gamma, y disagree", e->name);
  REQUIRE(e, rstdOut->ndim == 2 && rstdOut->dims[0] == x->dims[0] && rstdOut->dims[1] == 1 &&
                 rstdOut->dtype == DT_F32,
          "%s: rstdOut must be FLOAT (T, 1)", e->name);
  REQUIRE(e, is_float(x->dtype) && gamma->dtype == x->dtype && yOut->dtype == x->dtype,
          "%s: x, gamma, y must share a float dtype", e->name);
  keep(e, 0, x), keep(e, 1, gamma), keep(e, 2, yOut), keep(e, 3, rstdOut);
  e->d[0] = epsilon;
  e->ws_need = 0;
  return finish_gws(e, workspaceSize, executor, a2);
}

static void run_rmsnorm(Exec *e) {
  const aclTensor *x = &e->t[0], *g = &e->t[1], *y = &e->t[2], *r = &e->t[3];
  int64_t rows = x->dims[0], cols = x->dims[1];
  double *row = malloc((size_t)cols * sizeof *row);
  for (int64_t i = 0; i < rows; i++) {
    double ss = 0;
    for (int64_t c = 0; c < cols; c++) {
      row[c] = rd(x, at2(x, i, c));
      ss += row[c] * row[c];
    }
    float inv = (float)(1.0 / sqrt((double)(float)((double)(float)(ss / (double)cols) + e->d[0])));
    for (int64_t c = 0; c < cols; c++) {
      float xn = (float)(row[c] * inv);
      wr(y, at2(y, i, c), (float)(rd(g, vec_at(g, c)) * xn));
    }
    wr(r, at2(r, i, 0), inv);
  }
  free(row);
}

EXPORT aclnnStatus aclnnRmsNorm(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnRmsNorm", workspace, workspaceSize, executor, stream);
}

// ---------------------------------------------------------------------------------------------------------------
// aclnnApplyRotaryPosEmb (layout 1 = BSND, in place): x_embed = x*cos + rotate_half(x)*sin
// ---------------------------------------------------------------------------------------------------------------

EXPORT aclnnStatus aclnnApplyRotaryPosEmbGetWorkspaceSize(aclTensor *queryRef, aclTensor *keyRef,
                                                          const aclTensor *cos, const aclTensor *sin, int64_t layout,
                                                          uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnApplyRotaryPosEmbGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnApplyRotaryPosEmb");
  log_tensor("queryRef", queryRef), log_tensor("keyRef", keyRef), log_tensor("cos", cos), log_tensor("sin", sin);
  bput(&g_log, "\"layout\":%lld,", (long long)layout);
  Exec *e = new_exec(OP_ROPE, "aclnnApplyRotaryPosEmb");
  CHECK_VIEW(e, "queryRef", queryRef);
  CHECK_VIEW(e, "keyRef", keyRef);
  CHECK_VIEW(e, "cos", cos);
  CHECK_VIEW(e, "sin", sin);
  REQUIRE(e, layout == 1, "%s: layout %lld, the stand-in models BSND (1)", e->name, (long long)layout);
  REQUIRE(e, queryRef->ndim == 4 && keyRef->ndim == 4 && cos->ndim == 4 && sin->ndim == 4, "%s: 4-D inputs",
          e->name);
  int64_t B = queryRef->dims[0], S = queryRef->dims[1], D = queryRef->dims[3];
  REQUIRE(e, keyRef->dims[0] == B && keyRef->dims[1] == S && cos->dims[0] == B && cos->dims[1] == S &&
                 sin->dims[0] == B && sin->dims[1] == S,
          "%s: B and S of query, key, cos, sin must match", e->name);
  REQUIRE(e, keyRef->dims[3] == D && cos->dims[3] == D && sin->dims[3] == D && cos->dims[2] == 1 &&
                 sin->dims[2] == 1 && D % 2 == 0,
          "%s: D must match (cos/sin are (B, S, 1, D)) and be even", e->name);
  REQUIRE(e, is_float(queryRef->dtype) && keyRef->dtype == queryRef->dtype && cos->dtype == queryRef->dtype &&
                 sin->dtype == queryRef->dtype,
          "%s: query, key, cos, sin must share one float dtype", e->name);
  keep(e, 0, queryRef), keep(e, 1, keyRef), keep(e, 2, cos), keep(e, 3, sin);
  e->ws_need = 0;
  return finish_gws(e, workspaceSize, executor, a2);
}

static int64_t at4(const aclTensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return t->offset + a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3];
}

static void rope_one(const aclTensor *x, const aclTensor *c, const aclTensor *s) {
  int64_t B = x->dims[0], S = x->dims[1], N = x->dims[2], D = x->dims[3], half = D / 2;
  for (int64_t b = 0; b < B; b++)
    for (int64_t q = 0; q < S; q++)
      for (int64_t h = 0; h < N; h++)
        for (int64_t i = 0; i < half; i++) {
          float x1 = (float)rd(x, at4(x, b, q, h, i)), x2 = (float)rd(x, at4(x, b, q, h, i + half));
          float c1 = (float)rd(c, at4(c, b, q, 0, i)), s1 = (float)rd(s, at4(s, b, q, 0, i));
          float c2 = (float)rd(c, at4(c, b, q, 0, i + half)), s2 = (float)rd(s, at4(s, b, q, 0, i + half));
          float a = x1 * c1, bb = x2 * s1, cc = x2 * c2, dd = x1 * s2;
          wr(x, at4(x, b, q, h, i), a - bb);
          wr(x, at4(x, b, q, h, i + half), cc + dd);
        }
}

static void run_rope(Exec *e) {
  rope_one(&e->t[0], &e->t[2], &e->t[3]);
  rope_one(&e->t[1], &e->t[2], &e->t[3]);
}

EXPORT aclnnStatus aclnnApplyRotaryPosEmb(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnApplyRotaryPosEmb", workspace, workspaceSize, executor, stream);
}

// ---------------------------------------------------------------------------------------------------------------
// aclnnFusedInferAttentionScoreV2: paged (block-table) attention, BSH query, BnBsH KV cache, int8 KV antiquant
// ---------------------------------------------------------------------------------------------------------------

EXPORT aclnnStatus aclnnFusedInferAttentionScoreV2GetWorkspaceSize(
    const aclTensor *query, const aclTensorList *key, const aclTensorList *value, const aclTensor *pseShift,
    const aclTensor *attenMask, const aclIntArray *actualSeqLengths, const aclIntArray *actualSeqLengthsKv,
    const aclTensor *deqScale1, const aclTensor *quantScale1, const aclTensor *deqScale2, const aclTensor *quantScale2,
    const aclTensor *quantOffset2, const aclTensor *antiquantScale, const aclTensor *antiquantOffset,
    const aclTensor *blockTable, const aclTensor *queryPaddingSize, const aclTensor *kvPaddingSize,
    const aclTensor *keyAntiquantScale, const aclTensor *keyAntiquantOffset, const aclTensor *valueAntiquantScale,
    const aclTensor *valueAntiquantOffset, const aclTensor *keySharedPrefix, const aclTensor *valueSharedPrefix,
    const aclIntArray *actualSharedPrefixLen, int64_t numHeads, double scaleValue, int64_t preTokens,
    int64_t nextTokens, char *inputLayout, int64_t numKeyValueHeads, int64_t sparseMode, int64_t innerPrecise,
    int64_t blockSize, int64_t antiquantMode, bool softmaxLseFlag, int64_t keyAntiquantMode,
    int64_t valueAntiquantMode, const aclTensor *attentionOut, const aclTensor *softmaxLse, uint64_t *workspaceSize,
    void **executor) {
  GUARD();
  INJECT("aclnnFusedInferAttentionScoreV2GetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnFusedInferAttentionScoreV2");
  log_tensor("query", query);
  log_tensor("key", key && key->magic == MAGIC_LIST && key->n ? key->items[0] : NULL);
  log_tensor("value", value && value->magic == MAGIC_LIST && value->n ? value->items[0] : NULL);
  log_tensor("attenMask", attenMask), log_tensor("antiquantScale", antiquantScale);
  log_tensor("antiquantOffset", antiquantOffset), log_tensor("blockTable", blockTable);
  log_tensor("attentionOut", attentionOut);
  bput(&g_log,
       "\"numHeads\":%lld,\"scaleValue\":%.9g,\"inputLayout\":\"%s\",\"numKeyValueHeads\":%lld,\"sparseMode\":%lld,"
       "\"blockSize\":%lld,\"innerPrecise\":%lld,\"antiquantMode\":%lld,\"actualSeqLengths\":[",
       (long long)numHeads, scaleValue, inputLayout ? inputLayout : "(null)", (long long)numKeyValueHeads,
       (long long)sparseMode, (long long)blockSize, (long long)innerPrecise, (long long)antiquantMode);
  for (uint64_t i = 0; actualSeqLengths && actualSeqLengths->magic == MAGIC_IARR && i < actualSeqLengths->n; i++)
    bput(&g_log, "%s%lld", i ? "," : "", (long long)actualSeqLengths->v[i]);
  bput(&g_log, "],\"actualSeqLengthsKv\":[");
  for (uint64_t i = 0; actualSeqLengthsKv && actualSeqLengthsKv->magic == MAGIC_IARR && i < actualSeqLengthsKv->n; i++)
    bput(&g_log, "%s%lld", i ? "," : "", (long long)actualSeqLengthsKv->v[i]);
  bput(&g_log, "],");
  Exec *e = new_exec(OP_FIA, "aclnnFusedInferAttentionScoreV2");
  REQUIRE(e, key && key->magic == MAGIC_LIST && key->n == 1 && value && value->magic == MAGIC_LIST && value->n == 1,
          "%s: key and value must be aclTensorLists of one cache tensor each (page attention)", e->name);
  const aclTensor *k = key->items[0], *v = value->items[0];
  CHECK_VIEW(e, "query", query);
  CHECK_VIEW(e, "key", k);
  CHECK_VIEW(e, "value", v);
  CHECK_VIEW(e, "attentionOut", attentionOut);
  CHECK_VIEW(e, "blockTable", blockTable);
  REQUIRE(e, !pseShift && !deqScale1 && !quantScale1 && !deqScale2 && !quantScale2 && !quantOffset2 &&
                 !queryPaddingSize && !kvPaddingSize && !keySharedPrefix && !valueSharedPrefix &&
                 !actualSharedPrefixLen && !softmaxLseFlag && !softmaxLse,
          "%s: an option this backend never uses was set", e->name);
  REQUIRE(e, !keyAntiquantScale && !keyAntiquantOffset && !valueAntiquantScale && !valueAntiquantOffset &&
                 keyAntiquantMode == 0 && valueAntiquantMode == 0,
          "%s: separate K/V antiquant parameters do not support page attention on Atlas A2", e->name);
  REQUIRE(e, inputLayout && strcmp(inputLayout, "BSH") == 0, "%s: inputLayout %s, the backend uses BSH", e->name,
          inputLayout ? inputLayout : "(null)");
  REQUIRE(e, query->ndim == 3 && attentionOut->ndim == 3, "%s: BSH query and attentionOut are 3-D", e->name);
  int64_t B = query->dims[0], S = query->dims[1], H = query->dims[2];
  REQUIRE(e, attentionOut->dims[0] == B && attentionOut->dims[1] == S && attentionOut->dims[2] == H &&
                 attentionOut->dtype == query->dtype,
          "%s: attentionOut must match query", e->name);
  REQUIRE(e, contiguous(query) && contiguous(attentionOut) && contiguous(k) && contiguous(v),
          "%s: query, key, value, attentionOut must be contiguous", e->name);
  REQUIRE(e, numHeads > 0 && H % numHeads == 0, "%s: H=%lld not divisible by numHeads=%lld", e->name, (long long)H,
          (long long)numHeads);
  int64_t D = H / numHeads, kvN = numKeyValueHeads ? numKeyValueHeads : numHeads;
  REQUIRE(e, numHeads % kvN == 0, "%s: numHeads %lld not a multiple of numKeyValueHeads %lld", e->name,
          (long long)numHeads, (long long)kvN);
  REQUIRE(e, k->ndim == 3 && v->ndim == 3 && k->dims[1] == blockSize && k->dims[2] == kvN * D &&
                 v->dims[0] == k->dims[0] && v->dims[1] == k->dims[1] && v->dims[2] == k->dims[2],
          "%s: key/value must be (blockNum, blockSize=%lld, kvN*D=%lld) (BnBsH)", e->name, (long long)blockSize,
          (long long)(kvN * D));
  REQUIRE(e, k->dtype == v->dtype, "%s: key and value dtypes differ", e->name);
  REQUIRE(e, blockSize > 0 && blockSize <= 512, "%s: blockSize %lld", e->name, (long long)blockSize);
  REQUIRE(e, blockTable->ndim == 2 && blockTable->dims[0] == B && blockTable->dtype == DT_I32,
          "%s: blockTable must be INT32 (B=%lld, maxBlocks)", e->name, (long long)B);
  REQUIRE(e, actualSeqLengthsKv && actualSeqLengthsKv->magic == MAGIC_IARR && actualSeqLengthsKv->n >= (uint64_t)B,
          "%s: page attention needs actualSeqLengthsKv for every batch", e->name);
  REQUIRE(e, is_float(query->dtype), "%s: query dtype %d", e->name, query->dtype);
  if (query->dtype == DT_F32) a2 = "query FLOAT (A2 takes FLOAT16/BFLOAT16)";
  if (k->dtype == DT_F32) a2 = "key/value FLOAT (A2 takes FLOAT16/BFLOAT16/INT8)";
  if (S > 1) {
    REQUIRE(e, actualSeqLengths && actualSeqLengths->magic == MAGIC_IARR && actualSeqLengths->n >= (uint64_t)B,
            "%s: Q_S > 1 needs actualSeqLengths", e->name);
    REQUIRE(e, sparseMode == 3, "%s: causal prefill over the cache uses sparseMode 3 (rightDownCausal), got %lld",
            e->name, (long long)sparseMode);
    CHECK_VIEW(e, "attenMask", attenMask);
    REQUIRE(e, attenMask->ndim == 2 && attenMask->dims[0] == 2048 && attenMask->dims[1] == 2048 &&
                   (attenMask->dtype == DT_BOOL || attenMask->dtype == DT_I8 || attenMask->dtype == DT_U8),
            "%s: sparseMode 3 needs a (2048, 2048) BOOL/INT8/UINT8 mask", e->name);
    for (int64_t i = 0; i < 2048; i += 97) // upper triangle 1 (masked), diagonal and below 0
      for (int64_t j = 0; j < 2048; j += 89)
        REQUIRE(e, rd(attenMask, at2(attenMask, i, j)) == (j > i ? 1 : 0),
                "%s: attenMask[%lld][%lld] must be %d for rightDownCausal", e->name, (long long)i, (long long)j,
                j > i ? 1 : 0);
  }
  if (k->dtype == DT_I8) {
    CHECK_VIEW(e, "antiquantScale", antiquantScale);
    REQUIRE(e, antiquantMode == 0 && antiquantScale->ndim == 2 && antiquantScale->dims[0] == 2 &&
                   antiquantScale->dims[1] == kvN * D && antiquantScale->dtype == query->dtype,
            "%s: int8 KV per-channel antiquantScale must be (2, H) of the query dtype", e->name);
    if (antiquantOffset) {
      CHECK_VIEW(e, "antiquantOffset", antiquantOffset);
      REQUIRE(e, antiquantOffset->ndim == 2 && antiquantOffset->dims[0] == 2 &&
                     antiquantOffset->dims[1] == kvN * D && antiquantOffset->dtype == query->dtype,
              "%s: antiquantOffset must match antiquantScale", e->name);
    }
  } else {
    REQUIRE(e, k->dtype == query->dtype || (k->dtype == DT_F16 && query->dtype == DT_F32),
            "%s: float KV dtype %d with query dtype %d", e->name, k->dtype, query->dtype);
    if (k->dtype != query->dtype) a2 = "query FLOAT with FLOAT16 KV";
  }
  keep(e, 0, query), keep(e, 1, k), keep(e, 2, v), keep(e, 3, blockTable), keep(e, 4, attentionOut);
  if (k->dtype == DT_I8) keep(e, 5, antiquantScale), keep(e, 6, antiquantOffset);
  keep_arr(e, 0, actualSeqLengths);
  keep_arr(e, 1, actualSeqLengthsKv);
  e->i[0] = numHeads, e->i[1] = kvN, e->i[2] = blockSize, e->i[3] = sparseMode;
  e->d[0] = scaleValue;
  e->ws_need = (uint64_t)(1 << 16) + (uint64_t)(B * numHeads) * 64;
  return finish_gws(e, workspaceSize, executor, a2);
}

static int run_fia(Exec *e) {
  const aclTensor *q = &e->t[0], *k = &e->t[1], *v = &e->t[2], *bt = &e->t[3], *o = &e->t[4];
  const aclTensor *as = e->has[5] ? &e->t[5] : NULL, *ao = e->has[6] ? &e->t[6] : NULL;
  int64_t B = q->dims[0], S = q->dims[1], H = q->dims[2], N = e->i[0], kvN = e->i[1], bs = e->i[2];
  int64_t D = H / N, group = N / kvN, kvH = kvN * D, numBlocks = k->dims[0], maxBlocks = bt->dims[1];
  double scale = e->d[0];
  for (int64_t b = 0; b < B; b++) {
    int64_t kvLen = e->arr[1][b], qLen = S > 1 ? e->arr[0][b] : 1;
    if (kvLen > maxBlocks * bs || qLen > S || qLen < 0) {
      set_err("stand-in kernel fault in %s: batch %lld has kv length %lld (blockTable holds %lld) and q length %lld",
              e->name, (long long)b, (long long)kvLen, (long long)(maxBlocks * bs), (long long)qLen);
      return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
    int64_t *slot = malloc((size_t)(kvLen ? kvLen : 1) * sizeof *slot);
    for (int64_t j = 0; j < kvLen; j++) {
      int64_t blk = (int64_t)rd(bt, at2(bt, b, j / bs));
      if (blk < 0 || blk >= numBlocks) {
        set_err("stand-in kernel fault in %s: batch %lld token %lld is in block %lld, the cache has %lld", e->name,
                (long long)b, (long long)j, (long long)blk, (long long)numBlocks);
        free(slot);
        return ACL_ERROR_RT_AICORE_EXCEPTION;
      }
      slot[j] = blk * bs + j % bs;
    }
    double *sc = malloc((size_t)(kvLen ? kvLen : 1) * sizeof *sc);
    for (int64_t i = 0; i < qLen; i++) {
      // rightDownCausal: the last query row sees the whole context, row i sees kvLen - qLen + i + 1 keys
      int64_t seen = kvLen - qLen + i + 1;
      for (int64_t h = 0; h < N; h++) {
        int64_t g = h / group;
        double m = -INFINITY;
        for (int64_t j = 0; j < seen; j++) {
          double dot = 0;
          for (int64_t d = 0; d < D; d++) {
            int64_t c = g * D + d;
            double kv = rd(k, k->offset + slot[j] * kvH + c);
            if (as) kv = (float)((kv + (ao ? rd(ao, at2(ao, 0, c)) : 0)) * rd(as, at2(as, 0, c)));
            dot += rd(q, q->offset + b * q->strides[0] + i * q->strides[1] + h * D + d) * kv;
          }
          sc[j] = dot * scale;
          if (sc[j] > m) m = sc[j];
        }
        double z = 0;
        for (int64_t j = 0; j < seen; j++) z += (sc[j] = exp(sc[j] - m));
        for (int64_t d = 0; d < D; d++) {
          int64_t c = g * D + d;
          double acc = 0;
          for (int64_t j = 0; j < seen; j++) {
            double vv = rd(v, v->offset + slot[j] * kvH + c);
            if (as) vv = (float)((vv + (ao ? rd(ao, at2(ao, 1, c)) : 0)) * rd(as, at2(as, 1, c)));
            acc += sc[j] * vv;
          }
          wr(o, o->offset + b * o->strides[0] + i * o->strides[1] + h * D + d, seen > 0 ? acc / z : 0);
        }
      }
    }
    free(sc);
    free(slot);
  }
  return 0;
}

EXPORT aclnnStatus aclnnFusedInferAttentionScoreV2(void *workspace, uint64_t workspaceSize, void *executor,
                                                   void *stream) {
  GUARD();
  return launch("aclnnFusedInferAttentionScoreV2", workspace, workspaceSize, executor, stream);
}

// ---------------------------------------------------------------------------------------------------------------
// aclnnScatterPaKvCache (cacheMode "Norm"): cache[slot / bs][slot % bs] = row
// ---------------------------------------------------------------------------------------------------------------

EXPORT aclnnStatus aclnnScatterPaKvCacheGetWorkspaceSize(
    const aclTensor *key, aclTensor *keyCacheRef, const aclTensor *slotMapping, const aclTensor *value,
    aclTensor *valueCacheRef, const aclTensor *compressLens, const aclTensor *compressSeqOffset,
    const aclTensor *seqLens, char *cacheMode, char *scatterMode, const aclIntArray *strides,
    const aclIntArray *offsets, uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnScatterPaKvCacheGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnScatterPaKvCache");
  log_tensor("key", key), log_tensor("keyCacheRef", keyCacheRef), log_tensor("slotMapping", slotMapping);
  log_tensor("value", value), log_tensor("valueCacheRef", valueCacheRef);
  bput(&g_log, "\"cacheMode\":\"%s\",\"scatterMode\":\"%s\",", cacheMode ? cacheMode : "(null)",
       scatterMode ? scatterMode : "(null)");
  Exec *e = new_exec(OP_SCATTER_KV, "aclnnScatterPaKvCache");
  CHECK_VIEW(e, "key", key);
  CHECK_VIEW(e, "keyCacheRef", keyCacheRef);
  CHECK_VIEW(e, "slotMapping", slotMapping);
  CHECK_VIEW(e, "value", value);
  CHECK_VIEW(e, "valueCacheRef", valueCacheRef);
  REQUIRE(e, !compressLens && !compressSeqOffset && !seqLens && !strides && !offsets,
          "%s: compression / non-contiguous options are not used", e->name);
  REQUIRE(e, cacheMode && strcmp(cacheMode, "Norm") == 0 && (!scatterMode || strcmp(scatterMode, "None") == 0),
          "%s: the backend writes an ND cache (cacheMode Norm, scatterMode None)", e->name);
  REQUIRE(e, key->ndim == 3 && value->ndim == 3 && keyCacheRef->ndim == 4 && valueCacheRef->ndim == 4,
          "%s: key/value (T, N, D) and caches (blocks, blockSize, N, D) expected", e->name);
  REQUIRE(e, key->dims[1] == keyCacheRef->dims[2] && key->dims[2] == keyCacheRef->dims[3] &&
                 value->dims[0] == key->dims[0] && value->dims[1] == valueCacheRef->dims[2] &&
                 value->dims[2] == valueCacheRef->dims[3] && keyCacheRef->dims[0] == valueCacheRef->dims[0] &&
                 keyCacheRef->dims[1] == valueCacheRef->dims[1],
          "%s: key/value and cache shapes disagree", e->name);
  REQUIRE(e, key->dtype == keyCacheRef->dtype && value->dtype == valueCacheRef->dtype && key->dtype == value->dtype,
          "%s: key, value and caches must share one dtype (%d, %d, %d, %d)", e->name, key->dtype, keyCacheRef->dtype,
          value->dtype, valueCacheRef->dtype);
  REQUIRE(e, slotMapping->ndim == 1 && slotMapping->dims[0] == key->dims[0] &&
                 (slotMapping->dtype == DT_I32 || slotMapping->dtype == DT_I64),
          "%s: slotMapping must be INT32/INT64 (T)", e->name);
  REQUIRE(e, contiguous(keyCacheRef) && contiguous(valueCacheRef), "%s: caches must be contiguous", e->name);
  if (key->dtype == DT_F32) a2 = "key/value FLOAT (A2 takes FLOAT16/BFLOAT16/INT8)";
  keep(e, 0, key), keep(e, 1, keyCacheRef), keep(e, 2, slotMapping), keep(e, 3, value), keep(e, 4, valueCacheRef);
  e->ws_need = 0;
  return finish_gws(e, workspaceSize, executor, a2);
}

static int run_scatter(Exec *e) {
  const aclTensor *k = &e->t[0], *kc = &e->t[1], *sm = &e->t[2], *v = &e->t[3], *vc = &e->t[4];
  int64_t T = k->dims[0], N = k->dims[1], D = k->dims[2], slots = kc->dims[0] * kc->dims[1];
  for (int64_t t = 0; t < T; t++) {
    int64_t s = (int64_t)rd(sm, sm->offset + t * sm->strides[0]);
    if (s < 0 || s >= slots) {
      set_err("stand-in kernel fault in %s: slotMapping[%lld] = %lld outside 0..%lld", e->name, (long long)t,
              (long long)s, (long long)(slots - 1));
      return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
    for (int64_t n = 0; n < N; n++)
      for (int64_t d = 0; d < D; d++) {
        int64_t dst = kc->offset + s * N * D + n * D + d;
        wr(kc, dst, rd(k, k->offset + t * k->strides[0] + n * k->strides[1] + d * k->strides[2]));
        wr(vc, vc->offset + s * N * D + n * D + d,
           rd(v, v->offset + t * v->strides[0] + n * v->strides[1] + d * v->strides[2]));
      }
  }
  return 0;
}

EXPORT aclnnStatus aclnnScatterPaKvCache(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnScatterPaKvCache", workspace, workspaceSize, executor, stream);
}

// ---------------------------------------------------------------------------------------------------------------
// aclnnQuantize: out = round(x / scales + zeroPoints), saturated to int8, along `axis`
// ---------------------------------------------------------------------------------------------------------------

EXPORT aclnnStatus aclnnQuantizeGetWorkspaceSize(const aclTensor *x, const aclTensor *scales,
                                                 const aclTensor *zeroPoints, int dtype, int32_t axis, aclTensor *out,
                                                 uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnQuantizeGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnQuantize");
  log_tensor("x", x), log_tensor("scales", scales), log_tensor("zeroPoints", zeroPoints), log_tensor("out", out);
  bput(&g_log, "\"dtype\":%d,\"axis\":%d,", dtype, axis);
  Exec *e = new_exec(OP_QUANTIZE, "aclnnQuantize");
  CHECK_VIEW(e, "x", x);
  CHECK_VIEW(e, "scales", scales);
  CHECK_VIEW(e, "out", out);
  if (zeroPoints) CHECK_VIEW(e, "zeroPoints", zeroPoints);
  REQUIRE(e, dtype == DT_I8 && out->dtype == DT_I8, "%s: the backend quantizes to INT8", e->name);
  REQUIRE(e, x->ndim == 2 && out->ndim == 2 && out->dims[0] == x->dims[0] && out->dims[1] == x->dims[1],
          "%s: x and out must be (T, C) of one shape", e->name);
  REQUIRE(e, axis == 1 || axis == -1, "%s: axis %d, the backend quantizes per channel (last axis)", e->name, axis);
  REQUIRE(e, scales->ndim == 1 && scales->dims[0] == x->dims[1], "%s: scales must be (C)", e->name);
  REQUIRE(e, is_float(x->dtype) && (x->dtype == DT_F32 ? is_float(scales->dtype) : scales->dtype == x->dtype),
          "%s: scales must have x's dtype unless x is FLOAT", e->name);
  if (zeroPoints)
    REQUIRE(e, zeroPoints->ndim == 1 && zeroPoints->dims[0] == x->dims[1] && zeroPoints->dtype == DT_I32,
            "%s: zeroPoints must be INT32 (C)", e->name);
  keep(e, 0, x), keep(e, 1, scales), keep(e, 2, zeroPoints), keep(e, 3, out);
  e->ws_need = 512;
  return finish_gws(e, workspaceSize, executor, a2);
}

static void run_quantize(Exec *e) {
  const aclTensor *x = &e->t[0], *s = &e->t[1], *z = e->has[2] ? &e->t[2] : NULL, *o = &e->t[3];
  for (int64_t i = 0; i < x->dims[0]; i++)
    for (int64_t c = 0; c < x->dims[1]; c++) {
      float q = (float)rd(x, at2(x, i, c)) / (float)rd(s, vec_at(s, c));
      float t = q + (float)(z ? rd(z, vec_at(z, c)) : 0);
      double r = rint(t); // round half to even in the default rounding mode
      wr(o, at2(o, i, c), r < -128 ? -128 : r > 127 ? 127 : r);
    }
}

EXPORT aclnnStatus aclnnQuantize(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnQuantize", workspace, workspaceSize, executor, stream);
}

// ---------------------------------------------------------------------------------------------------------------
// elementwise: aclnnSilu, aclnnMul, aclnnAdd (other may broadcast over rows), aclnnCast
// ---------------------------------------------------------------------------------------------------------------

static bool same_shape(const aclTensor *a, const aclTensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->dims[i] != b->dims[i]) return false;
  return true;
}

EXPORT aclnnStatus aclnnSiluGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
                                             void **executor) {
  GUARD();
  INJECT("aclnnSiluGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnSilu");
  log_tensor("self", self), log_tensor("out", out);
  Exec *e = new_exec(OP_SILU, "aclnnSilu");
  CHECK_VIEW(e, "self", self);
  CHECK_VIEW(e, "out", out);
  REQUIRE(e, self->ndim == 2 && same_shape(self, out) && is_float(self->dtype) && out->dtype == self->dtype,
          "%s: self and out must be 2-D with one shape and float dtype", e->name);
  keep(e, 0, self), keep(e, 1, out);
  return finish_gws(e, workspaceSize, executor, a2);
}

EXPORT aclnnStatus aclnnSilu(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnSilu", workspace, workspaceSize, executor, stream);
}

EXPORT aclnnStatus aclnnMulGetWorkspaceSize(const aclTensor *self, const aclTensor *other, aclTensor *out,
                                            uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnMulGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnMul");
  log_tensor("self", self), log_tensor("other", other), log_tensor("out", out);
  Exec *e = new_exec(OP_MUL, "aclnnMul");
  CHECK_VIEW(e, "self", self);
  CHECK_VIEW(e, "other", other);
  CHECK_VIEW(e, "out", out);
  REQUIRE(e, self->ndim == 2 && same_shape(self, other) && same_shape(self, out), "%s: shapes must match", e->name);
  REQUIRE(e, is_float(self->dtype) && other->dtype == self->dtype && out->dtype == self->dtype,
          "%s: one float dtype", e->name);
  keep(e, 0, self), keep(e, 1, other), keep(e, 2, out);
  return finish_gws(e, workspaceSize, executor, a2);
}

EXPORT aclnnStatus aclnnMul(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnMul", workspace, workspaceSize, executor, stream);
}

EXPORT aclnnStatus aclnnAddGetWorkspaceSize(const aclTensor *self, const aclTensor *other, const aclScalar *alpha,
                                            aclTensor *out, uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnAddGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnAdd");
  log_tensor("self", self), log_tensor("other", other), log_tensor("out", out);
  Exec *e = new_exec(OP_ADD, "aclnnAdd");
  CHECK_VIEW(e, "self", self);
  CHECK_VIEW(e, "other", other);
  CHECK_VIEW(e, "out", out);
  REQUIRE(e, alpha && alpha->magic == MAGIC_SCALAR, "%s: alpha must be a live aclScalar", e->name);
  bput(&g_log, "\"alpha\":%.9g,", alpha->value);
  REQUIRE(e, self->ndim == 2 && same_shape(self, out), "%s: self and out must be 2-D of one shape", e->name);
  bool bcast = other->ndim == 2 && other->dims[0] == 1 && other->dims[1] == self->dims[1];
  REQUIRE(e, same_shape(self, other) || bcast, "%s: other must match self or broadcast as (1, C)", e->name);
  REQUIRE(e, is_float(self->dtype) && other->dtype == self->dtype && out->dtype == self->dtype,
          "%s: one float dtype", e->name);
  keep(e, 0, self), keep(e, 1, other), keep(e, 2, out);
  e->d[0] = alpha->value;
  return finish_gws(e, workspaceSize, executor, a2);
}

EXPORT aclnnStatus aclnnAdd(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnAdd", workspace, workspaceSize, executor, stream);
}

static void run_elementwise(Exec *e) {
  const aclTensor *a = &e->t[0];
  for (int64_t i = 0; i < a->dims[0]; i++)
    for (int64_t c = 0; c < a->dims[1]; c++) {
      double x = rd(a, at2(a, i, c));
      if (e->op == OP_SILU) {
        wr(&e->t[1], at2(&e->t[1], i, c), (float)(x / (1.0 + exp(-x))));
      } else if (e->op == OP_MUL) {
        double y = rd(&e->t[1], at2(&e->t[1], i, c));
        wr(&e->t[2], at2(&e->t[2], i, c), (float)x * (float)y);
      } else {
        const aclTensor *b = &e->t[1];
        double y = rd(b, at2(b, b->dims[0] == 1 ? 0 : i, c));
        wr(&e->t[2], at2(&e->t[2], i, c), x + e->d[0] * y);
      }
    }
}

EXPORT aclnnStatus aclnnCastGetWorkspaceSize(const aclTensor *self, int dtype, aclTensor *out,
                                             uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnCastGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnCast");
  log_tensor("self", self), log_tensor("out", out);
  bput(&g_log, "\"dtype\":%d,", dtype);
  Exec *e = new_exec(OP_CAST, "aclnnCast");
  CHECK_VIEW(e, "self", self);
  CHECK_VIEW(e, "out", out);
  REQUIRE(e, self->ndim == 2 && same_shape(self, out) && out->dtype == dtype, "%s: out must be self's shape in dtype %d",
          e->name, dtype);
  keep(e, 0, self), keep(e, 1, out);
  return finish_gws(e, workspaceSize, executor, a2);
}

EXPORT aclnnStatus aclnnCast(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnCast", workspace, workspaceSize, executor, stream);
}

// aclnnInplaceCopy(selfRef, src): selfRef = src, any strides (the on-stream copy used for aliased outputs)
EXPORT aclnnStatus aclnnInplaceCopyGetWorkspaceSize(aclTensor *selfRef, const aclTensor *src, uint64_t *workspaceSize,
                                                    void **executor) {
  GUARD();
  INJECT("aclnnInplaceCopyGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnInplaceCopy");
  log_tensor("selfRef", selfRef), log_tensor("src", src);
  Exec *e = new_exec(OP_COPY, "aclnnInplaceCopy");
  CHECK_VIEW(e, "selfRef", selfRef);
  CHECK_VIEW(e, "src", src);
  REQUIRE(e, selfRef->ndim == 2 && same_shape(selfRef, src) && selfRef->dtype == src->dtype,
          "%s: selfRef and src must be 2-D of one shape and dtype", e->name);
  keep(e, 0, src), keep(e, 1, selfRef);
  return finish_gws(e, workspaceSize, executor, a2);
}

EXPORT aclnnStatus aclnnInplaceCopy(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnInplaceCopy", workspace, workspaceSize, executor, stream);
}

static void run_cast(Exec *e) {
  const aclTensor *a = &e->t[0], *o = &e->t[1];
  for (int64_t i = 0; i < a->dims[0]; i++)
    for (int64_t c = 0; c < a->dims[1]; c++) wr(o, at2(o, i, c), rd(a, at2(a, i, c)));
}

// ---------------------------------------------------------------------------------------------------------------
// gathers: aclnnEmbedding (weight rows by indices), aclnnIndexSelect (dim 0)
// ---------------------------------------------------------------------------------------------------------------

static aclnnStatus gather_gws(int op, const char *name, const aclTensor *src, const aclTensor *idx,
                              const aclTensor *out, int64_t dim, uint64_t *workspaceSize, void **executor) {
  const char *a2 = NULL;
  log_begin(name);
  log_tensor(op == OP_EMBEDDING ? "weight" : "self", src), log_tensor(op == OP_EMBEDDING ? "indices" : "index", idx);
  log_tensor("out", out);
  Exec *e = new_exec(op, name);
  CHECK_VIEW(e, "source", src);
  CHECK_VIEW(e, "indices", idx);
  CHECK_VIEW(e, "out", out);
  REQUIRE(e, dim == 0, "%s: dim %lld, only 0 is used", name, (long long)dim);
  REQUIRE(e, src->ndim == 2 && idx->ndim == 1 && out->ndim == 2 && out->dims[0] == idx->dims[0] &&
                 out->dims[1] == src->dims[1],
          "%s: (R, C)[(n)] -> (n, C) expected", name);
  REQUIRE(e, idx->dtype == DT_I32 || idx->dtype == DT_I64, "%s: indices must be INT32/INT64", name);
  REQUIRE(e, out->dtype == src->dtype, "%s: out dtype must equal the source dtype", name);
  keep(e, 0, src), keep(e, 1, idx), keep(e, 2, out);
  return finish_gws(e, workspaceSize, executor, a2);
}

EXPORT aclnnStatus aclnnEmbeddingGetWorkspaceSize(const aclTensor *weight, const aclTensor *indices,
                                                  const aclTensor *out, uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnEmbeddingGetWorkspaceSize");
  return gather_gws(OP_EMBEDDING, "aclnnEmbedding", weight, indices, out, 0, workspaceSize, executor);
}

EXPORT aclnnStatus aclnnEmbedding(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnEmbedding", workspace, workspaceSize, executor, stream);
}

EXPORT aclnnStatus aclnnIndexSelectGetWorkspaceSize(const aclTensor *self, int64_t dim, const aclTensor *index,
                                                    aclTensor *out, uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnIndexSelectGetWorkspaceSize");
  return gather_gws(OP_INDEX_SELECT, "aclnnIndexSelect", self, index, out, dim, workspaceSize, executor);
}

EXPORT aclnnStatus aclnnIndexSelect(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnIndexSelect", workspace, workspaceSize, executor, stream);
}

static int run_gather(Exec *e) {
  const aclTensor *src = &e->t[0], *idx = &e->t[1], *o = &e->t[2];
  for (int64_t r = 0; r < idx->dims[0]; r++) {
    int64_t row = (int64_t)rd(idx, idx->offset + r * idx->strides[0]);
    if (row < 0 || row >= src->dims[0]) {
      set_err("stand-in kernel fault in %s: index %lld at %lld outside 0..%lld", e->name, (long long)row,
              (long long)r, (long long)(src->dims[0] - 1));
      return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
    for (int64_t c = 0; c < src->dims[1]; c++) wr(o, at2(o, r, c), rd(src, at2(src, row, c)));
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// aclnnArgMax along the last dim (first maximum wins; NaN never wins)
// ---------------------------------------------------------------------------------------------------------------

EXPORT aclnnStatus aclnnArgMaxGetWorkspaceSize(const aclTensor *self, int64_t dim, bool keepdim, aclTensor *out,
                                               uint64_t *workspaceSize, void **executor) {
  GUARD();
  INJECT("aclnnArgMaxGetWorkspaceSize");
  const char *a2 = NULL;
  log_begin("aclnnArgMax");
  log_tensor("self", self), log_tensor("out", out);
  bput(&g_log, "\"dim\":%lld,\"keepdim\":%s,", (long long)dim, keepdim ? "true" : "false");
  Exec *e = new_exec(OP_ARGMAX, "aclnnArgMax");
  CHECK_VIEW(e, "self", self);
  CHECK_VIEW(e, "out", out);
  REQUIRE(e, self->ndim == 2 && (dim == 1 || dim == -1) && !keepdim, "%s: 2-D self, dim -1, keepdim false", e->name);
  REQUIRE(e, out->ndim == 1 && out->dims[0] == self->dims[0] && (out->dtype == DT_I32 || out->dtype == DT_I64),
          "%s: out must be INT32/INT64 (rows)", e->name);
  REQUIRE(e, is_float(self->dtype), "%s: float self", e->name);
  keep(e, 0, self), keep(e, 1, out);
  e->ws_need = (uint64_t)self->dims[0] * 8;
  return finish_gws(e, workspaceSize, executor, a2);
}

EXPORT aclnnStatus aclnnArgMax(void *workspace, uint64_t workspaceSize, void *executor, void *stream) {
  GUARD();
  return launch("aclnnArgMax", workspace, workspaceSize, executor, stream);
}

static void run_argmax(Exec *e) {
  const aclTensor *s = &e->t[0], *o = &e->t[1];
  for (int64_t r = 0; r < s->dims[0]; r++) {
    int64_t best = 0;
    double bv = -INFINITY;
    for (int64_t c = 0; c < s->dims[1]; c++) {
      double v = rd(s, at2(s, r, c));
      if (v > bv) {
        bv = v;
        best = c;
      }
    }
    wr(o, o->offset + r * o->strides[0], (double)best);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// HCCL: communicators of one process (ranks are backends in the same process, on one thread or several). The last
// rank's task of a round writes the sum to every rank's receive buffer; a rank on its own thread waits for it.
// ---------------------------------------------------------------------------------------------------------------

#define HCCL_ROOT_INFO_BYTES 4108
#define MAX_GROUPS 16
#define MAX_RANKS 16
/** How long a rank waits for the others' part of a collective when HCCL_EXEC_TIMEOUT is unset: long enough for any
 * test step on a loaded 2-core box, short enough that a hang shows up as a failure rather than a stuck test run. */
#define STANDIN_HCCL_TIMEOUT_S 60

typedef struct {
  int id, nRanks, joined, contributed, dtype;
  bool member[MAX_RANKS];
  bool left[MAX_RANKS];   // destroyed its communicator
  bool in[MAX_RANKS];     // contributed to the current round
  pthread_t owner[MAX_RANKS]; // the thread that joined as this rank
  unsigned long rounds;   // completed all-reduce rounds
  uint64_t count;
  double *acc;
  void *recv[MAX_RANKS];
} Group;
static Group g_groups[MAX_GROUPS];
static int g_ngroups, g_next_group = 1;
static pthread_cond_t g_hccl_cv = PTHREAD_COND_INITIALIZER; // signalled when a round completes or a rank leaves

typedef struct {
  uint32_t magic;
  int group, rank;
} Comm;
#define MAGIC_COMM 0x4d4d4f43u

EXPORT HcclResult HcclGetRootInfo(void *rootInfo) {
  GUARD();
  INJECT("HcclGetRootInfo");
  if (!rootInfo) {
    set_err("HcclGetRootInfo: null rootInfo");
    return HCCL_E_PTR;
  }
  memset(rootInfo, 0, HCCL_ROOT_INFO_BYTES);
  memcpy(rootInfo, "STANDIN-HCCL", 12);
  int id = g_next_group++;
  memcpy((char *)rootInfo + 16, &id, sizeof id);
  return HCCL_SUCCESS;
}

EXPORT HcclResult HcclCommInitRootInfo(uint32_t nRanks, const void *rootInfo, uint32_t rank, void **comm) {
  GUARD();
  INJECT("HcclCommInitRootInfo");
  if (!rootInfo || !comm || memcmp(rootInfo, "STANDIN-HCCL", 12) != 0) {
    set_err("HcclCommInitRootInfo: rootInfo does not come from HcclGetRootInfo");
    return HCCL_E_PARA;
  }
  if (nRanks == 0 || nRanks > MAX_RANKS || rank >= nRanks) {
    set_err("HcclCommInitRootInfo: rank %u of %u ranks", rank, nRanks);
    return HCCL_E_PARA;
  }
  int id;
  memcpy(&id, (const char *)rootInfo + 16, sizeof id);
  Group *g = NULL;
  for (int i = 0; i < g_ngroups; i++)
    if (g_groups[i].id == id) g = &g_groups[i];
  if (!g) {
    if (g_ngroups == MAX_GROUPS) {
      set_err("HcclCommInitRootInfo: too many communicators");
      return HCCL_E_PARA;
    }
    g = &g_groups[g_ngroups++];
    memset(g, 0, sizeof *g);
    g->id = id;
    g->nRanks = (int)nRanks;
  }
  if (g->nRanks != (int)nRanks || g->member[rank]) {
    set_err("HcclCommInitRootInfo: rank %u joined twice or with a different rank count", rank);
    return HCCL_E_PARA;
  }
  g->member[rank] = true;
  g->left[rank] = false;
  g->owner[rank] = pthread_self();
  g->joined++;
  Comm *c = calloc(1, sizeof *c);
  c->magic = MAGIC_COMM;
  c->group = id;
  c->rank = (int)rank;
  *comm = c;
  return HCCL_SUCCESS;
}

static Group *group_of(const Comm *c) {
  for (int i = 0; i < g_ngroups; i++)
    if (g_groups[i].id == c->group) return &g_groups[i];
  return NULL;
}

EXPORT HcclResult HcclAllReduce(void *sendBuf, void *recvBuf, uint64_t count, int dataType, int op, void *comm,
                                void *stream) {
  GUARD();
  INJECT("HcclAllReduce");
  Comm *c = comm;
  if (!c || c->magic != MAGIC_COMM) {
    set_err("HcclAllReduce: not a live communicator");
    return HCCL_E_PARA;
  }
  if (op != 0) {
    set_err("HcclAllReduce: reduce op %d, the stand-in does sum (0) only", op);
    return HCCL_E_NOT_SUPPORT;
  }
  int dt = dataType == HCCL_FP32 ? DT_F32 : dataType == HCCL_FP16 ? DT_F16 : dataType == HCCL_BF16 ? DT_BF16 : -1;
  if (dt < 0) {
    set_err("HcclAllReduce: HcclDataType %d, the stand-in sums FP32/FP16/BF16", dataType);
    return HCCL_E_NOT_SUPPORT;
  }
  if (!find_alloc(sendBuf, count * dsize(dt)) || !find_alloc(recvBuf, count * dsize(dt))) {
    set_err("HcclAllReduce: buffers are not inside live device allocations");
    return HCCL_E_PTR;
  }
  if (!is_stream(stream)) {
    set_err("HcclAllReduce: not a live stream");
    return HCCL_E_PARA;
  }
  Exec *x = new_exec(OP_ALLREDUCE, "HcclAllReduce");
  x->p[0] = sendBuf, x->p[1] = recvBuf, x->p[2] = c;
  x->i[0] = (int64_t)count, x->i[1] = dt;
  enqueue(stream, x);
  return HCCL_SUCCESS;
}

static Group *group_by_id(int id) {
  for (int i = 0; i < g_ngroups; i++)
    if (g_groups[i].id == id) return &g_groups[i];
  return NULL;
}

// A rank that left (HcclCommDestroy) and has not given its part of the current round, or -1.
static int missing_rank_left(const Group *g) {
  for (int r = 0; r < g->nRanks; r++)
    if (g->left[r] && !g->in[r]) return r;
  return -1;
}

static int hccl_timeout_s(void) {
  const char *v = getenv("HCCL_EXEC_TIMEOUT");
  int s = v ? atoi(v) : 0;
  return s > 0 ? s : STANDIN_HCCL_TIMEOUT_S;
}

// Runs with g_mu held (from aclrtSynchronizeStream); the wait releases it so the other ranks' threads can run.
static int run_allreduce(Exec *x) {
  Comm *c = x->p[2];
  const int id = c->group, rank = c->rank;
  Group *g = group_by_id(id);
  uint64_t count = (uint64_t)x->i[0];
  int dt = (int)x->i[1];
  if (!g) {
    set_err("stand-in kernel fault in HcclAllReduce: communicator destroyed");
    return ACL_ERROR_RT_AICORE_EXCEPTION;
  }
  int gone = missing_rank_left(g);
  if (gone >= 0) {
    set_err("stand-in collective fault in HcclAllReduce (rank %d): rank %d left the communicator", rank, gone);
    return ACL_ERROR_RT_AICORE_EXCEPTION;
  }
  if (g->contributed == 0) {
    g->count = count;
    g->dtype = dt;
    free(g->acc);
    g->acc = calloc(count, sizeof *g->acc);
  } else if (g->count != count || g->dtype != dt) {
    set_err("stand-in kernel fault in HcclAllReduce: rank %d reduces %llu elements of dtype %d, others %llu of %d",
            rank, (unsigned long long)count, dt, (unsigned long long)g->count, g->dtype);
    return ACL_ERROR_RT_AICORE_EXCEPTION;
  }
  aclTensor v = {.magic = MAGIC_TENSOR, .dtype = dt, .data = x->p[0]};
  for (uint64_t i = 0; i < count; i++) g->acc[i] += rd(&v, (int64_t)i);
  g->recv[rank] = x->p[1];
  g->in[rank] = true;
  if (++g->contributed == g->nRanks) {
    for (int r = 0; r < g->nRanks; r++) {
      aclTensor o = {.magic = MAGIC_TENSOR, .dtype = dt, .data = g->recv[r]};
      for (uint64_t i = 0; i < count; i++) wr(&o, (int64_t)i, g->acc[i]);
      g->in[r] = false;
    }
    g->contributed = 0;
    g->rounds++;
    pthread_cond_broadcast(&g_hccl_cv);
    return 0;
  }
  // A missing rank driven by this thread cannot arrive while this thread waits: complete later, when its stream runs.
  pthread_t self = pthread_self();
  for (int r = 0; r < g->nRanks; r++)
    if (!g->in[r] && pthread_equal(g->owner[r], self)) return 0;
  const unsigned long round = g->rounds;
  const int timeout_s = hccl_timeout_s();
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_s;
  for (;;) {
    int w = pthread_cond_timedwait(&g_hccl_cv, &g_mu, &deadline);
    g = group_by_id(id); // the table may have been compacted while unlocked
    if (g && g->rounds != round) return 0;
    if (!g || (gone = missing_rank_left(g)) >= 0) {
      set_err("stand-in collective fault in HcclAllReduce (rank %d): rank %d left the communicator before its part "
              "of the all-reduce", rank, g ? gone : -1);
      return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
    if (w == ETIMEDOUT) {
      int missing = -1;
      for (int r = 0; r < g->nRanks && missing < 0; r++)
        if (!g->in[r]) missing = r;
      set_err("stand-in collective timeout in HcclAllReduce (rank %d): rank %d gave no part within %d s "
              "(HCCL_EXEC_TIMEOUT)", rank, missing, timeout_s);
      return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
  }
}

EXPORT HcclResult HcclCommDestroy(void *comm) {
  GUARD();
  INJECT("HcclCommDestroy");
  Comm *c = comm;
  if (!c || c->magic != MAGIC_COMM) {
    set_err("HcclCommDestroy: not a live communicator");
    return HCCL_E_PARA;
  }
  Group *g = group_of(c);
  if (g) g->left[c->rank] = true;
  if (g && --g->joined == 0) {
    free(g->acc);
    *g = g_groups[--g_ngroups];
  }
  pthread_cond_broadcast(&g_hccl_cv); // ranks waiting for this one's part stop waiting
  c->magic = 0;
  free(c);
  return HCCL_SUCCESS;
}

EXPORT const char *HcclGetErrorString(HcclResult code) {
  GUARD();
  switch (code) {
    case HCCL_SUCCESS: return "HCCL_SUCCESS";
    case HCCL_E_PARA: return "HCCL_E_PARA: parameter error";
    case HCCL_E_PTR: return "HCCL_E_PTR: empty pointer";
    case HCCL_E_NOT_SUPPORT: return "HCCL_E_NOT_SUPPORT: not supported";
    default: return "HCCL error";
  }
}

// ---------------------------------------------------------------------------------------------------------------
// kernel dispatch at synchronize time
// ---------------------------------------------------------------------------------------------------------------

static int run_exec(Exec *x) {
  if (x->op == OP_MEMSET) {
    if (!find_alloc(x->p[0], (size_t)x->i[0])) {
      set_err("stand-in kernel fault in aclrtMemsetAsync: memory freed before the memset ran");
      return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
    memset(x->p[0], (int)x->i[1], (size_t)x->i[0]);
    return 0;
  }
  if (x->op == OP_ALLREDUCE) return run_allreduce(x);
  int st = still_live(x);
  if (st) return st;
  scribble(x);
  switch (x->op) {
    case OP_WQBMM: run_wqbmm(x); return 0;
    case OP_MATMUL: run_matmul(x); return 0;
    case OP_RMSNORM: run_rmsnorm(x); return 0;
    case OP_ROPE: run_rope(x); return 0;
    case OP_FIA: return run_fia(x);
    case OP_SCATTER_KV: return run_scatter(x);
    case OP_QUANTIZE: run_quantize(x); return 0;
    case OP_SILU: case OP_MUL: case OP_ADD: run_elementwise(x); return 0;
    case OP_CAST: case OP_COPY: run_cast(x); return 0;
    case OP_EMBEDDING: case OP_INDEX_SELECT: return run_gather(x);
    case OP_ARGMAX: run_argmax(x); return 0;
  }
  set_err("stand-in: unknown queued op %d", x->op);
  return ACL_ERROR_RT_AICORE_EXCEPTION;
}

// ---------------------------------------------------------------------------------------------------------------
// test controls (stand-in only)
// ---------------------------------------------------------------------------------------------------------------

EXPORT void standin_set_mem_limit(size_t bytes) {
  GUARD();
  g_limit = bytes;
}

EXPORT void standin_reset(void) {
  GUARD();
  g_ninject = 0;
  g_limit = 0;
  g_log.len = 0;
  g_err[0] = 0;
}

EXPORT void standin_log_clear(void) {
  GUARD();
  g_log.len = 0;
}

EXPORT const char *standin_log_json(void) {
  GUARD();
  static Buf out;
  out.len = 0;
  bput(&out, "[%.*s]", (int)g_log.len, g_log.p ? g_log.p : "");
  return out.p;
}

EXPORT const char *standin_stats_json(void) {
  GUARD();
  g_stats.len = 0;
  bput(&g_stats,
       "{\"liveTensors\":%ld,\"liveTensorLists\":%ld,\"liveIntArrays\":%ld,\"liveScalars\":%ld,"
       "\"liveExecutors\":%ld,\"queued\":%ld,\"liveAllocations\":%zu,\"bytesInUse\":%zu,\"peakBytes\":%zu,"
       "\"mallocs\":%ld,\"frees\":%ld,\"h2d\":%ld,\"d2h\":%ld,\"d2d\":%ld,\"syncs\":%ld,\"launches\":%ld,"
       "\"initialized\":%s,\"device\":%d}",
       g_live_tensors, g_live_lists, g_live_iarrays, g_live_scalars, g_live_execs - g_queued, g_queued, g_nallocs,
       g_inuse, g_peak, g_n_malloc, g_n_free, g_n_h2d, g_n_d2h, g_n_d2d, g_n_sync, g_n_launch,
       g_inited ? "true" : "false", g_device);
  return g_stats.p;
}
