/* sfm_chunker cuts content-defined chunks (PROTOCOL.md 5.4) on the libuv thread pool. A big file's
 * bytes pass through the chunker once per upload or digest: in JavaScript that is one core at about
 * 2 GB/s, on the main thread, which also frames and sends the chunks. Here it is about 3.5-6 GB/s on
 * a pool thread, while the main thread hashes the previous block and talks to the socket.
 *
 * The parameters and the Gear table come from src/chunker.ts with each call, so the one definition
 * of the chunker stays there; src/native/chunker-addon.ts is the only caller. */

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include "sfm_napi.h"

/* [MIN_SIZE, NORMAL_SIZE, MAX_SIZE, MASK_S, MASK_L, GEAR[0..255]], as src/chunker.ts lays it out. */
#define TABLE_WORDS (5 + 256)

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep; /* the bytes' Buffer, alive until the job ends */
  const uint8_t *data;
  size_t length;
  int final;
  uint32_t min, normal, max, mask_s, mask_l;
  uint32_t gear[256];
  size_t count;
  uint32_t lengths[]; /* out: the chunk lengths, in order (one allocation with the job) */
} CutJob;

/* The length of the chunk at the start of `b`, `r` bytes remaining: the pseudo-code of 5.4. */
static size_t cut(const CutJob *job, const uint8_t *b, size_t r) {
  if (r <= job->min) return r;
  size_t limit = r < job->max ? r : job->max;
  size_t normal = r < job->normal ? r : job->normal;
  uint32_t h = 0;
  size_t i = job->min;
  for (; i < normal; i++) {
    h = (h << 1) + job->gear[b[i]];
    if ((h & job->mask_s) == 0) return i + 1;
  }
  for (; i < limit; i++) {
    h = (h << 1) + job->gear[b[i]];
    if ((h & job->mask_l) == 0) return i + 1;
  }
  return limit;
}

/* Cuts every chunk whose end is decided: with MAX_SIZE bytes or more after its start, or all of them
 * when the bytes end the file. */
static void cut_execute(napi_env env, void *data) {
  (void)env;
  CutJob *job = data;
  size_t pos = 0;
  while (pos < job->length && (job->final || job->length - pos >= job->max)) {
    size_t n = cut(job, job->data + pos, job->length - pos);
    job->lengths[job->count++] = (uint32_t)n;
    pos += n;
  }
}

static void cut_complete(napi_env env, napi_status status, void *data) {
  CutJob *job = data;
  napi_value result = NULL, buffer = NULL;
  void *bytes = NULL;
  if (status == napi_ok && napi_create_arraybuffer(env, job->count * 4, &bytes, &buffer) == napi_ok &&
      napi_create_typedarray(env, napi_uint32_array, job->count, buffer, 0, &result) == napi_ok) {
    if (job->count > 0) memcpy(bytes, job->lengths, job->count * 4);
    napi_resolve_deferred(env, job->deferred, result);
  } else {
    napi_value message = NULL, error = NULL;
    napi_create_string_utf8(env, "cutChunks failed", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &error);
    napi_reject_deferred(env, job->deferred, error);
  }
  napi_delete_reference(env, job->keep);
  napi_delete_async_work(env, job->work);
  free(job);
}

static int get_index(napi_env env, napi_value value, size_t limit, size_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || !(d >= 0 && d <= (double)limit) || d != (double)(size_t)d) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "start and end must be integers within the buffer");
    return 0;
  }
  *out = (size_t)d;
  return 1;
}

/* cutChunks(bytes: Uint8Array, start, end, final: boolean, table: Int32Array): Promise<Uint32Array>.
 * The lengths of the chunks cut from bytes[start, end): while MAX_SIZE bytes or more remain, or to
 * the end when `final`. `bytes` must not change until the promise settles. */
static napi_value cut_chunks(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv, "cutChunks(bytes, start, end, final, table)")) return NULL;
  bool is_array = false;
  napi_typedarray_type type;
  size_t size = 0, words = 0;
  void *bytes = NULL, *table = NULL;
  if (napi_is_typedarray(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_typedarray_info(env, argv[0], &type, &size, &bytes, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "bytes must be a Uint8Array");
    return NULL;
  }
  if (napi_is_typedarray(env, argv[4], &is_array) != napi_ok || !is_array ||
      napi_get_typedarray_info(env, argv[4], &type, &words, &table, NULL, NULL) != napi_ok ||
      type != napi_int32_array || words != TABLE_WORDS) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "table must be an Int32Array of 261 words");
    return NULL;
  }
  size_t start, end;
  bool final = false;
  if (!get_index(env, argv[1], size, &start) || !get_index(env, argv[2], size, &end)) return NULL;
  if (start > end) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "start is past end");
    return NULL;
  }
  if (napi_get_value_bool(env, argv[3], &final) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "final must be a boolean");
    return NULL;
  }
  const uint32_t *t = table;
  if (!(t[0] >= 1 && t[0] <= t[1] && t[1] <= t[2] && t[2] <= (1u << 30))) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "chunk sizes must be 1 <= MIN <= NORMAL <= MAX <= 2^30");
    return NULL;
  }

  /* every chunk but the last has at least MIN bytes */
  CutJob *job = calloc(1, sizeof *job + ((end - start) / t[0] + 1) * sizeof job->lengths[0]);
  if (job == NULL) {
    napi_throw_error(env, "ENOMEM", "cutChunks: out of memory");
    return NULL;
  }
  job->data = (const uint8_t *)bytes + start;
  job->length = end - start;
  job->final = final;
  job->min = t[0];
  job->normal = t[1];
  job->max = t[2];
  job->mask_s = t[3];
  job->mask_l = t[4];
  memcpy(job->gear, t + 5, sizeof job->gear);

  return queue_job_keeping(env, argv[0], &job->keep, "sfm:cut_chunks", cut_execute, cut_complete, job, &job->work,
                           &job->deferred);
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"cutChunks", NULL, cut_chunks, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
