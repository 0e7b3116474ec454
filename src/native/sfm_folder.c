/* sfm_folder reads the client's folder in whole jobs on the libuv thread pool. listDir lists a
 * directory and lstats every entry: one call per directory instead of a readdir plus one lstat per
 * entry. Through Node each lstat costs a thread-pool round trip and a BigIntStats object (about
 * 10 us here); fstatat(2) on the open directory costs 2 to 3 us and walks no path. src/fs/list-dir.ts
 * decodes the records below. Errors travel as errno numbers; JS turns them into Node-style errors.
 *
 * Reading small files the same way (open, fstat, read, fstat, close in one job) was tried and
 * dropped: the thread-pool hand-off cost more CPU than the five calls it saved; done on the main
 * thread, it saved only 10%. */

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
 *   is 0, STAT_BYTES: uint32 st_mode, uint64 st_size, st_ino, st_dev, int64 mtime and ctime in
 *   nanoseconds. Times come whole so that JS reads each as one BigInt: as seconds and nanoseconds they
 *   cost five BigInt operations an entry, and decoding the 21,000 entries of the benchmark's W1 tree
 *   took 75 ms of the main thread's time in a profile, against 54 ms now. A time
 *   that does not fit (before 1678 or after 2262) is the lstat error EOVERFLOW: mtime_ns on the wire
 *   is an int64 too (PROTOCOL.md 3.4). */
#define STAT_BYTES 44

/* Seconds and nanoseconds as int64 nanoseconds; 0 if they do not fit. */
static int time_ns(const struct timespec *t, int64_t *ns) {
  int64_t s;
  return !__builtin_mul_overflow((int64_t)t->tv_sec, (int64_t)1000000000, &s) &&
         !__builtin_add_overflow(s, (int64_t)t->tv_nsec, ns);
}

/* One job: a path in, a buffer of records out. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  int no_follow;
  uint8_t *out;
  size_t len;
  size_t cap;
  int oom;
} FolderJob;

static void put(FolderJob *job, const void *bytes, size_t n) {
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
static void put_u16(FolderJob *job, uint16_t v) { put(job, &v, 2); }
static void put_i32(FolderJob *job, int32_t v) { put(job, &v, 4); }
static void put_u32(FolderJob *job, uint32_t v) { put(job, &v, 4); }
static void put_u64(FolderJob *job, uint64_t v) { put(job, &v, 8); }
static void put_i64(FolderJob *job, int64_t v) { put(job, &v, 8); }

static void list_execute(napi_env env, void *data) {
  (void)env;
  FolderJob *job = data;
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
      int64_t mtime_ns = 0, ctime_ns = 0;
      if (st_err == 0 && !(time_ns(&st.st_mtim, &mtime_ns) && time_ns(&st.st_ctim, &ctime_ns))) st_err = EOVERFLOW;
      put_u16(job, (uint16_t)name_len);
      put(job, name, name_len);
      put_i32(job, st_err);
      if (st_err != 0) continue;
      put_u32(job, (uint32_t)st.st_mode);
      put_u64(job, (uint64_t)st.st_size);
      put_u64(job, (uint64_t)st.st_ino);
      put_u64(job, (uint64_t)st.st_dev);
      put_i64(job, mtime_ns);
      put_i64(job, ctime_ns);
    }
    closedir(dir);
  }
  if (job->oom) err = ENOMEM;
  if (err != 0 && job->out != NULL) {
    int32_t e = err;
    memcpy(job->out, &e, 4);
  }
}

static void job_complete(napi_env env, napi_status status, void *data) {
  FolderJob *job = data;
  napi_value result = NULL;
  if (status == napi_ok && !job->oom && job->out != NULL &&
      napi_create_buffer_copy(env, job->len, job->out, NULL, &result) == napi_ok) {
    napi_resolve_deferred(env, job->deferred, result);
  } else {
    napi_value msg;
    napi_create_string_utf8(env, "sfm_folder: out of memory or cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    napi_reject_deferred(env, job->deferred, result);
  }
  napi_delete_async_work(env, job->work);
  free(job->out);
  free(job->path);
  free(job);
}

/* Reads the path argument and queues the job; NULL (with an exception pending) on failure. */
static napi_value start_job(napi_env env, napi_value js_path, FolderJob *job, const char *label,
                            napi_async_execute_callback execute) {
  size_t path_len;
  if (napi_get_value_string_utf8(env, js_path, NULL, 0, &path_len) != napi_ok) {
    free(job);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "path must be a string");
    return NULL;
  }
  job->path = malloc(path_len + 1);
  if (job->path == NULL) {
    free(job);
    napi_throw_error(env, "ENOMEM", "sfm_folder: out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, js_path, job->path, path_len + 1, &path_len);
  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, label, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, job_complete, job, &job->work) != napi_ok) {
    free(job->path);
    free(job);
    return NULL;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free(job->path);
    free(job);
    return NULL;
  }
  return promise;
}

/* listDir(path: string, noFollow: boolean): Promise<Buffer>, in the format above. */
static napi_value list_dir(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  bool no_follow = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2 || napi_get_value_bool(env, argv[1], &no_follow) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "listDir(path: string, noFollow: boolean)");
    return NULL;
  }
  FolderJob *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, "ENOMEM", "sfm_folder: out of memory");
    return NULL;
  }
  job->no_follow = no_follow;
  return start_job(env, argv[0], job, "sfm:listDir", list_execute);
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"listDir", NULL, list_dir, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
