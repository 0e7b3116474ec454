/* sfm_scan lists a directory and lstats every entry in one job on the libuv thread pool: one call
 * from JS per directory instead of a readdir plus one lstat per entry. Through Node each lstat costs
 * a thread-pool round trip and a BigIntStats object (about 10 us here); fstatat(2) on the open
 * directory costs 2 to 3 us and walks no path. src/fs/list-dir.ts is its only caller and decodes
 * the records below. Errors travel as errno numbers; JS turns them into Node-style errors. */

#define _GNU_SOURCE
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <node_api.h>

/* The listing, little-endian:
 *   int32 errno of opening or reading the directory (0: the records that follow are all of it)
 *   then per entry: uint16 name length, the name's bytes, int32 errno of its lstat, and when that
 *   is 0, STAT_BYTES: uint32 st_mode, uint64 st_size, st_ino, st_dev, int64 mtime seconds,
 *   uint32 mtime nanoseconds, int64 ctime seconds, uint32 ctime nanoseconds. */
#define STAT_BYTES 52

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  int no_follow;
  uint8_t *out;
  size_t len;
  size_t cap;
  int oom;
} ListJob;

static void put(ListJob *job, const void *bytes, size_t n) {
  if (job->oom) return;
  if (job->len + n > job->cap) {
    size_t cap = job->cap ? job->cap * 2 : 16384;
    while (cap < job->len + n) cap *= 2;
    uint8_t *grown = realloc(job->out, cap);
    if (grown == NULL) {
      job->oom = 1;
      return;
    }
    job->out = grown;
    job->cap = cap;
  }
  memcpy(job->out + job->len, bytes, n);
  job->len += n;
}

/* The wire format is little-endian; so is every machine sfm runs on (x86-64, arm64). */
static void put_u16(ListJob *job, uint16_t v) { put(job, &v, 2); }
static void put_i32(ListJob *job, int32_t v) { put(job, &v, 4); }
static void put_u32(ListJob *job, uint32_t v) { put(job, &v, 4); }
static void put_u64(ListJob *job, uint64_t v) { put(job, &v, 8); }
static void put_i64(ListJob *job, int64_t v) { put(job, &v, 8); }

static void list_execute(napi_env env, void *data) {
  (void)env;
  ListJob *job = data;
  put_i32(job, 0); /* patched below on failure */
  int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (job->no_follow ? O_NOFOLLOW : 0);
  int fd = open(job->path, flags);
  DIR *dir = fd < 0 ? NULL : fdopendir(fd);
  int err = 0;
  if (dir == NULL) {
    err = errno;
    if (fd >= 0) close(fd);
  } else {
    for (;;) {
      errno = 0;
      struct dirent *d = readdir(dir);
      if (d == NULL) {
        err = errno;
        break;
      }
      const char *name = d->d_name;
      if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
      size_t name_len = strlen(name);
      struct stat st;
      int st_err = fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
      put_u16(job, (uint16_t)name_len);
      put(job, name, name_len);
      put_i32(job, st_err);
      if (st_err != 0) continue;
      put_u32(job, (uint32_t)st.st_mode);
      put_u64(job, (uint64_t)st.st_size);
      put_u64(job, (uint64_t)st.st_ino);
      put_u64(job, (uint64_t)st.st_dev);
      put_i64(job, (int64_t)st.st_mtim.tv_sec);
      put_u32(job, (uint32_t)st.st_mtim.tv_nsec);
      put_i64(job, (int64_t)st.st_ctim.tv_sec);
      put_u32(job, (uint32_t)st.st_ctim.tv_nsec);
    }
    closedir(dir);
  }
  if (job->oom) err = ENOMEM;
  if (err != 0 && job->out != NULL) {
    int32_t e = err;
    memcpy(job->out, &e, 4);
  }
}

static void list_complete(napi_env env, napi_status status, void *data) {
  ListJob *job = data;
  napi_value result = NULL;
  if (status == napi_ok && !job->oom && job->out != NULL &&
      napi_create_buffer_copy(env, job->len, job->out, NULL, &result) == napi_ok) {
    napi_resolve_deferred(env, job->deferred, result);
  } else {
    napi_value msg;
    napi_create_string_utf8(env, "sfm_scan: listing failed (out of memory or cancelled)", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    napi_reject_deferred(env, job->deferred, result);
  }
  napi_delete_async_work(env, job->work);
  free(job->out);
  free(job->path);
  free(job);
}

/* listDir(path: string, noFollow: boolean): Promise<Buffer>, in the format above. */
static napi_value list_dir(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "listDir(path, noFollow)");
    return NULL;
  }
  size_t path_len;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &path_len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "path must be a string");
    return NULL;
  }
  ListJob *job = calloc(1, sizeof *job);
  char *path = job == NULL ? NULL : malloc(path_len + 1);
  bool no_follow = false;
  if (job == NULL || path == NULL) {
    free(job);
    napi_throw_error(env, "ENOMEM", "listDir: out of memory");
    return NULL;
  }
  job->path = path;
  napi_get_value_string_utf8(env, argv[0], path, path_len + 1, &path_len);
  if (napi_get_value_bool(env, argv[1], &no_follow) != napi_ok) {
    free(path);
    free(job);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "noFollow must be a boolean");
    return NULL;
  }
  job->no_follow = no_follow;
  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "sfm:listDir", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, list_execute, list_complete, job, &job->work) != napi_ok) {
    free(path);
    free(job);
    return NULL;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free(path);
    free(job);
    return NULL;
  }
  return promise;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"listDir", NULL, list_dir, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, 1, props) != napi_ok) return NULL;
  return exports;
}
