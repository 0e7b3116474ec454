/* What sfm's addons share: the bail-out on a failed napi_* call, reading a call's arguments, and
 * queueing a job on the libuv thread pool behind a promise. Each addon is its own .c file and .node; this header is included by
 * sfm_native.c and sfm_chunker.c. */
#ifndef SFM_NAPI_H
#define SFM_NAPI_H

#include <stdlib.h>

#include <node_api.h>

/* Any failed napi_* call means a programming error or a pending exception: bail out and let the
 * pending exception (if any) reach JS. */
#define NAPI_OK(call)                                                                              \
  do {                                                                                             \
    if ((call) != napi_ok) return NULL;                                                            \
  } while (0)

/* Reads the `n` arguments of a call into argv: 0, with ERR_MISSING_ARGS naming `usage` thrown (or the
 * napi failure pending), if fewer came. */
static inline int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *usage) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return 0;
  if (argc < n) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", usage);
    return 0;
  }
  return 1;
}

/* Queues `job` on the libuv thread pool and returns the promise its completion settles. On failure
 * the job is freed and the pending exception is thrown to the caller. */
static inline napi_value queue_job(napi_env env, const char *label, napi_async_execute_callback execute,
                                   napi_async_complete_callback complete, void *job, napi_async_work *work,
                                   napi_deferred *deferred) {
  napi_value promise, name;
  if (napi_create_promise(env, deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, label, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, job, work) != napi_ok) {
    free(job); /* the promise, if made, is dropped unsettled; the pending exception is thrown */
    return NULL;
  }
  if (napi_queue_async_work(env, *work) != napi_ok) {
    napi_delete_async_work(env, *work);
    free(job);
    return NULL;
  }
  return promise;
}

/* queue_job for a job that reads the memory of `value` (a Buffer or typed array) on the pool: `value`
 * is kept alive in `*keep` until the job's completion deletes that reference. On failure the job is
 * freed, the reference dropped, and the pending exception thrown to the caller. */
static inline napi_value queue_job_keeping(napi_env env, napi_value value, napi_ref *keep, const char *label,
                                           napi_async_execute_callback execute, napi_async_complete_callback complete,
                                           void *job, napi_async_work *work, napi_deferred *deferred) {
  napi_ref ref;
  if (napi_create_reference(env, value, 1, &ref) != napi_ok) {
    free(job);
    return NULL;
  }
  *keep = ref;
  napi_value promise = queue_job(env, label, execute, complete, job, work, deferred);
  if (promise == NULL) napi_delete_reference(env, ref); /* queue_job freed the job, and `keep` with it */
  return promise;
}

#endif
