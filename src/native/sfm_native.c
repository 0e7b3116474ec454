/* sfm_native owns the file-system calls Node 20 lacks: utimensat(2) and futimens(2) with a
 * full-precision mtime (atime left alone), syncfs(2), copy_file_range(2), copies and writes with
 * O_DIRECT, cloned ranges (FICLONERANGE), and unnamed files
 * (open(2) with O_TMPFILE, then linkat(2) to give one a name); and malloc_trim(3), which Node has no
 * call for either. src/fs/native.ts is its only caller. */

#define _GNU_SOURCE /* syncfs(2), O_TMPFILE, AT_EMPTY_PATH, strerrorname_np(3) */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <node_api.h>

#include "sfm_napi.h"

#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim(3) */
#endif

#ifdef __linux__
#include <linux/fs.h> /* FICLONERANGE */
#endif

/* Node's fs errors carry libuv's names; these are the POSIX names, which coincide for everything
 * these three syscalls can return. */
static const char *errno_name(int err) {
  switch (err) {
    case EACCES: return "EACCES";
    case EAGAIN: return "EAGAIN";
    case EBADF: return "EBADF";
    case EBUSY: return "EBUSY";
    case EDQUOT: return "EDQUOT";
    case EEXIST: return "EEXIST";
    case EFAULT: return "EFAULT";
    case EINTR: return "EINTR";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case EISDIR: return "EISDIR";
    case ELOOP: return "ELOOP";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOENT: return "ENOENT";
    case ENOMEM: return "ENOMEM";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case ENOTDIR: return "ENOTDIR";
    case ENOTSUP: return "ENOTSUP";
    case EOVERFLOW: return "EOVERFLOW";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case ESRCH: return "ESRCH";
    case ETXTBSY: return "ETXTBSY";
    case EXDEV: return "EXDEV";
    default: break;
  }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  {
    const char *name = strerrorname_np(err);
    if (name != NULL) return name;
  }
#endif
  return "UNKNOWN";
}

/* Builds an Error shaped like Node's fs errors: message "ENOENT: no such file or directory,
 * utimensat '/x'", code 'ENOENT', errno -2 (negative, as libuv reports it), syscall, path.
 * `path` may be NULL (fd calls). Must run on the JS thread (strerror is not thread-safe). */
static napi_value make_errno_error(napi_env env, int err, const char *syscall, napi_value path) {
  const char *code = errno_name(err);
  char desc[256];
  snprintf(desc, sizeof desc, "%s", strerror(err));
  if (desc[0] >= 'A' && desc[0] <= 'Z') desc[0] = (char)(desc[0] - 'A' + 'a');

  char msg[512];
  size_t path_len = 0;
  char path_buf[256] = "";
  if (path != NULL &&
      napi_get_value_string_utf8(env, path, path_buf, sizeof path_buf, &path_len) == napi_ok) {
    snprintf(msg, sizeof msg, "%s: %s, %s '%s'", code, desc, syscall, path_buf);
  } else {
    snprintf(msg, sizeof msg, "%s: %s, %s", code, desc, syscall);
  }

  napi_value js_code, js_msg, error, js_errno, js_syscall;
  NAPI_OK(napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &js_code));
  NAPI_OK(napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &js_msg));
  NAPI_OK(napi_create_error(env, js_code, js_msg, &error));
  NAPI_OK(napi_create_int32(env, -err, &js_errno));
  NAPI_OK(napi_set_named_property(env, error, "errno", js_errno));
  NAPI_OK(napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &js_syscall));
  NAPI_OK(napi_set_named_property(env, error, "syscall", js_syscall));
  if (path != NULL) NAPI_OK(napi_set_named_property(env, error, "path", path));
  return error;
}

static void throw_errno(napi_env env, int err, const char *syscall, napi_value path) {
  napi_value error = make_errno_error(env, err, syscall, path);
  if (error != NULL) napi_throw(env, error);
}

/* Copies a JS string argument into a new C string; throws (and returns NULL) if it is not a string
 * or holds a NUL, which would silently cut the path short (Node's fs rejects it too). */
static char *get_path(napi_env env, napi_value value, const char *syscall) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "path must be a string");
    return NULL;
  }
  char *path = malloc(len + 1);
  if (path == NULL) {
    throw_errno(env, ENOMEM, syscall, value);
    return NULL;
  }
  napi_get_value_string_utf8(env, value, path, len + 1, &len);
  if (strlen(path) != len) {
    free(path);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "path must not contain NUL bytes");
    return NULL;
  }
  return path;
}

/* Seconds arrive as a BigInt (any int64) or as a Number that is an exact integer. A double is
 * range-checked against ±2^63 before the cast, since an out-of-range cast is undefined in C. */
static int get_seconds(napi_env env, napi_value value, int64_t *out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return 0;
  if (type == napi_bigint) {
    bool lossless = false;
    if (napi_get_value_bigint_int64(env, value, out, &lossless) != napi_ok) return 0;
    if (!lossless) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "mtime seconds do not fit in 64 bits");
      return 0;
    }
    return 1;
  }
  if (type == napi_number) {
    double d;
    if (napi_get_value_double(env, value, &d) != napi_ok) return 0;
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != floor(d)) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "mtime seconds must be an integer");
      return 0;
    }
    *out = (int64_t)d;
    return 1;
  }
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "mtime seconds must be a bigint or a number");
  return 0;
}

static int get_nanoseconds(napi_env env, napi_value value, long *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "mtime nanoseconds must be a number");
    return 0;
  }
  if (!(d >= 0 && d <= 999999999) || d != floor(d)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "mtime nanoseconds must be an integer in 0..999999999");
    return 0;
  }
  *out = (long)d;
  return 1;
}

static int get_fd(napi_env env, napi_value value, int *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || !(d >= 0 && d <= INT32_MAX) ||
      d != floor(d)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd must be a non-negative integer");
    return 0;
  }
  *out = (int)d;
  return 1;
}

/* times[0] is atime, times[1] mtime: atime stays as it is (UTIME_OMIT). */
static int get_times(napi_env env, napi_value sec, napi_value nsec, struct timespec times[2]) {
  int64_t s;
  long ns;
  if (!get_seconds(env, sec, &s) || !get_nanoseconds(env, nsec, &ns)) return 0;
  if ((int64_t)(time_t)s != s) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "mtime seconds do not fit in time_t");
    return 0;
  }
  times[0].tv_sec = 0;
  times[0].tv_nsec = UTIME_OMIT;
  times[1].tv_sec = (time_t)s;
  times[1].tv_nsec = ns;
  return 1;
}

/* utimesNs(path: string, sec: bigint | number, nsec: number, noFollow: boolean): undefined */
static napi_value utimes_ns(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "utimesNs(path, sec, nsec, noFollow)")) return NULL;

  char *path = get_path(env, argv[0], "utimensat");
  if (path == NULL) return NULL;

  struct timespec times[2];
  bool no_follow = false;
  if (!get_times(env, argv[1], argv[2], times) ||
      napi_get_value_bool(env, argv[3], &no_follow) != napi_ok) {
    free(path);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "noFollow must be a boolean");
    return NULL;
  }

  int rc = utimensat(AT_FDCWD, path, times, no_follow ? AT_SYMLINK_NOFOLLOW : 0);
  int err = errno;
  free(path);
  if (rc != 0) throw_errno(env, err, "utimensat", argv[0]);
  return NULL;
}

/* futimesNs(fd: number, sec: bigint | number, nsec: number): undefined */
static napi_value futimes_ns(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv, "futimesNs(fd, sec, nsec)")) return NULL;
  int fd;
  struct timespec times[2];
  if (!get_fd(env, argv[0], &fd) || !get_times(env, argv[1], argv[2], times)) return NULL;
  if (futimens(fd, times) != 0) throw_errno(env, errno, "futimens", NULL);
  return NULL;
}


/* syncfs runs on the libuv thread pool: it can take seconds on a busy disk. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int err;
} SyncfsJob;

static void syncfs_execute(napi_env env, void *data) {
  (void)env;
  SyncfsJob *job = data;
#ifdef __linux__
  job->err = syncfs(job->fd) == 0 ? 0 : errno;
#else
  job->err = ENOSYS;
#endif
}

static void syncfs_complete(napi_env env, napi_status status, void *data) {
  SyncfsJob *job = data;
  napi_value result = NULL;
  if (status != napi_ok) {
    result = make_errno_error(env, EINTR, "syncfs", NULL); /* cancelled: only at env teardown */
  } else if (job->err != 0) {
    result = make_errno_error(env, job->err, "syncfs", NULL);
  }
  if (result == NULL && (status != napi_ok || job->err != 0)) {
    /* Could not even build the error; reject with whatever is pending. */
    napi_get_and_clear_last_exception(env, &result);
  }
  if (status == napi_ok && job->err == 0) {
    napi_get_undefined(env, &result);
    napi_resolve_deferred(env, job->deferred, result);
  } else {
    napi_reject_deferred(env, job->deferred, result);
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

/* syncfs(fd: number): Promise<undefined>. The caller keeps fd open until the promise settles. */
static napi_value syncfs_async(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, "syncfs(fd)")) return NULL;
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;

  SyncfsJob *job = calloc(1, sizeof *job);
  if (job == NULL) {
    throw_errno(env, ENOMEM, "syncfs", NULL);
    return NULL;
  }
  job->fd = fd;
  return queue_job(env, "sfm:syncfs", syncfs_execute, syncfs_complete, job, &job->work, &job->deferred);
}

/* copy_file_range runs on the libuv thread pool: the kernel copies (or, on file systems that can,
 * shares) the bytes without them passing through this process. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd_in, fd_out;
  int64_t off_in, off_out, length, copied;
  int err;
  const char *syscall; /* for the error message */
} CopyJob;

static void copy_execute(napi_env env, void *data) {
  (void)env;
  CopyJob *job = data;
#ifdef __linux__
  loff_t in = job->off_in, out = job->off_out;
  while (job->copied < job->length) {
    size_t want = (size_t)(job->length - job->copied);
    if (want > ((size_t)1 << 30)) want = (size_t)1 << 30;
    ssize_t n = copy_file_range(job->fd_in, &in, job->fd_out, &out, want, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      job->err = errno;
      return;
    }
    if (n == 0) return; /* end of the source: the caller sees a short count */
    job->copied += n;
  }
#else
  job->err = ENOSYS;
#endif
}

/* Settles the promise of a job that moved bytes: with `count`, or with the error of `syscall` (EINTR
 * when the job was cancelled, which happens only at env teardown). */
static void settle_count(napi_env env, napi_status status, napi_deferred deferred, int err, int64_t count,
                         const char *syscall) {
  napi_value result = NULL;
  if (status == napi_ok && err == 0) {
    napi_create_double(env, (double)count, &result);
    napi_resolve_deferred(env, deferred, result);
  } else {
    result = make_errno_error(env, status != napi_ok ? EINTR : err, syscall, NULL);
    if (result == NULL) napi_get_and_clear_last_exception(env, &result);
    napi_reject_deferred(env, deferred, result);
  }
}

static void copy_complete(napi_env env, napi_status status, void *data) {
  CopyJob *job = data;
  settle_count(env, status, job->deferred, job->err, job->copied, job->syscall);
  napi_delete_async_work(env, job->work);
  free(job);
}

static int get_offset(napi_env env, napi_value value, int64_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || d < 0 || d > 9007199254740991.0 || d != (double)(int64_t)d) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offsets and lengths must be integers from 0 to 2^53 - 1");
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

/* Parses (fdIn, offIn, fdOut, offOut, length) into a CopyJob and queues `execute` on the thread pool;
 * the promise settles with the bytes copied (copy_complete). `usage` names the JS call in errors. */
static napi_value queue_copy(napi_env env, napi_callback_info info, const char *usage, const char *syscall,
                             const char *label, napi_async_execute_callback execute) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv, usage)) return NULL;
  CopyJob *job = calloc(1, sizeof *job);
  if (job == NULL) {
    throw_errno(env, ENOMEM, syscall, NULL);
    return NULL;
  }
  job->syscall = syscall;
  if (!get_fd(env, argv[0], &job->fd_in) || !get_offset(env, argv[1], &job->off_in) ||
      !get_fd(env, argv[2], &job->fd_out) || !get_offset(env, argv[3], &job->off_out) ||
      !get_offset(env, argv[4], &job->length)) {
    free(job);
    return NULL;
  }
  return queue_job(env, label, execute, copy_complete, job, &job->work, &job->deferred);
}

/* copyFileRange(fdIn, offIn, fdOut, offOut, length): Promise<number of bytes copied>. Both fds stay
 * open until the promise settles. Fewer bytes than asked means the source ended. */
static napi_value copy_file_range_async(napi_env env, napi_callback_info info) {
  return queue_copy(env, info, "copyFileRange(fdIn, offIn, fdOut, offOut, length)", "copy_file_range",
                    "sfm:copy_file_range", copy_execute);
}

/* copyDirect is copy_file_range for a big range of a file that is flushed to disk before it is
 * confirmed anyway: the bytes are written through a descriptor of its own opened with O_DIRECT on
 * the destination's file, so they go to the disk without first becoming a second, dirty copy in the
 * page cache (a backup host's memory stays with what is read, and no new page has to be found for
 * each 4 KiB written). The source is read from the page cache where it is there (preadv2 with
 * RWF_NOWAIT) and with O_DIRECT where it is not, so an uncached source does not fill the cache
 * either. The destination offset and the length must be multiples of DIRECT_ALIGN. */
#define DIRECT_ALIGN 4096
#define DIRECT_BLOCK ((size_t)1 << 20)

#ifdef __linux__
/* Another open file description for the file open as `fd`, with O_DIRECT: flags set with fcntl(2)
 * on `fd` itself would change them for every user of that description. */
static int reopen_direct(int fd, int flags) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return open(path, flags | O_DIRECT | O_CLOEXEC);
}

/* pread until `len` bytes or the end of the file; -1 with errno on failure. */
static ssize_t pread_full(int fd, char *buf, size_t len, off_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, off + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += (size_t)n;
  }
  return (ssize_t)done;
}

/* Reads `len` bytes at `off` of `fd` into `buf` (fewer only at the end of the file): what is cached
 * from the cache, the rest of the block from the disk through `*direct` (opened on first use) and
 * the aligned `bounce` buffer, 2 * DIRECT_ALIGN bytes longer than `len`. -1 with errno on failure. */
static ssize_t read_source(int fd, int *direct, char *buf, size_t len, off_t off, char *bounce) {
  size_t done = 0;
  while (done < len) {
    struct iovec iov = {buf + done, len - done};
    ssize_t n = preadv2(fd, &iov, 1, off + (off_t)done, RWF_NOWAIT);
    if (n > 0) {
      done += (size_t)n;
      continue;
    }
    if (n == 0) return (ssize_t)done; /* end of file */
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EOPNOTSUPP && errno != EINVAL) return -1;
    break; /* not in the page cache (or no RWF_NOWAIT here) */
  }
  if (done == len) return (ssize_t)done;
  off_t start = off + (off_t)done;
  size_t rest = len - done;
  off_t aligned = start & ~(off_t)(DIRECT_ALIGN - 1);
  size_t skip = (size_t)(start - aligned);
  size_t span = (skip + rest + DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1);
  if (*direct < 0) *direct = reopen_direct(fd, O_RDONLY);
  ssize_t got = *direct < 0 ? -1 : pread_full(*direct, bounce, span, aligned);
  if (got < 0) { /* no O_DIRECT for this source: through the cache after all */
    got = pread_full(fd, buf + done, rest, start);
    return got < 0 ? -1 : (ssize_t)done + got;
  }
  size_t have = (size_t)got > skip ? (size_t)got - skip : 0;
  if (have > rest) have = rest;
  memcpy(buf + done, bounce + skip, have);
  return (ssize_t)(done + have);
}

/* The aligned buffers of this thread of the pool, made on its first copy and kept: fresh pages for
 * every copy cost more to fault in and zero than the copy itself. At most DIRECT_BLOCK * 2 per thread. */
static int thread_buffers(char **buf, char **bounce) {
  static __thread void *own_buf, *own_bounce;
  if (own_buf == NULL && posix_memalign(&own_buf, DIRECT_ALIGN, DIRECT_BLOCK) != 0) own_buf = NULL;
  if (own_bounce == NULL && posix_memalign(&own_bounce, DIRECT_ALIGN, DIRECT_BLOCK + 2 * DIRECT_ALIGN) != 0) own_bounce = NULL;
  *buf = own_buf;
  *bounce = own_bounce;
  return own_buf != NULL && own_bounce != NULL;
}

static int pwrite_full(int fd, const char *buf, size_t len, off_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, off + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    done += (size_t)n;
  }
  return 0;
}
#endif

static void direct_execute(napi_env env, void *data) {
  (void)env;
  CopyJob *job = data;
#ifdef __linux__
  if (job->off_out % DIRECT_ALIGN != 0 || job->length % DIRECT_ALIGN != 0) {
    job->err = EINVAL;
    return;
  }
  int out = reopen_direct(job->fd_out, O_WRONLY);
  if (out < 0) {
    job->err = errno;
    return;
  }
  int direct_in = -1;
  char *buf = NULL, *bounce = NULL;
  if (!thread_buffers(&buf, &bounce)) job->err = ENOMEM;
  while (job->err == 0 && job->copied < job->length) {
    size_t want = (size_t)(job->length - job->copied);
    if (want > DIRECT_BLOCK) want = DIRECT_BLOCK;
    ssize_t got = read_source(job->fd_in, &direct_in, buf, want, job->off_in + job->copied, bounce);
    if (got < 0) {
      job->err = errno;
      break;
    }
    size_t whole = (size_t)got & ~(size_t)(DIRECT_ALIGN - 1);
    if (whole > 0 && pwrite_full(out, buf, whole, job->off_out + job->copied) != 0) {
      job->err = errno;
      break;
    }
    job->copied += (int64_t)whole;
    if ((size_t)got < want) break; /* the source ended: the caller sees a short count */
  }
  if (direct_in >= 0) close(direct_in);
  close(out);
#else
  job->err = ENOSYS;
#endif
}

/* cloneRange shares the source's blocks with the destination where the file system can (XFS, Btrfs):
 * nothing is copied or written but metadata. Offsets and length must be multiples of the file
 * system's block size. Elsewhere (ext4, tmpfs) it fails at once with EOPNOTSUPP, EXDEV or EINVAL. */
static void clone_execute(napi_env env, void *data) {
  (void)env;
  CopyJob *job = data;
#if defined(__linux__) && defined(FICLONERANGE)
  struct file_clone_range range = {
      .src_fd = job->fd_in,
      .src_offset = (uint64_t)job->off_in,
      .src_length = (uint64_t)job->length,
      .dest_offset = (uint64_t)job->off_out,
  };
  if (ioctl(job->fd_out, FICLONERANGE, &range) == 0) job->copied = job->length;
  else job->err = errno;
#else
  job->err = EOPNOTSUPP;
#endif
}

/* cloneRange(fdIn, offIn, fdOut, offOut, length): Promise<number of bytes cloned>, always `length`. */
static napi_value clone_range_async(napi_env env, napi_callback_info info) {
  return queue_copy(env, info, "cloneRange(fdIn, offIn, fdOut, offOut, length)", "ioctl", "sfm:clone_range",
                    clone_execute);
}

/* copyDirect(fdIn, offIn, fdOut, offOut, length): Promise<number of bytes copied>, a multiple of 4096
 * (fewer than asked means the source ended). Rejects with EINVAL where the file system refuses
 * O_DIRECT, or when offOut or length is not a multiple of 4096. Both fds stay open until it settles. */
static napi_value copy_direct_async(napi_env env, napi_callback_info info) {
  return queue_copy(env, info, "copyDirect(fdIn, offIn, fdOut, offOut, length)", "pwrite", "sfm:copy_direct",
                    direct_execute);
}

/* writeDirect writes new data of an upload that is flushed before it is confirmed anyway straight to
 * the disk, through a descriptor of its own opened with O_DIRECT, for the reason copyDirect does: no
 * dirty second copy in the page cache, no new page to find for each 4 KiB. The data comes from a
 * Buffer made by alignedBuffer(), so the disk reads it where it is, without a copy. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep; /* the Buffer, alive until the write ends */
  int fd;
  const char *data;
  size_t length;
  int64_t offset;
  int err;
} WriteJob;

static void write_direct_execute(napi_env env, void *data) {
  (void)env;
  WriteJob *job = data;
#ifdef __linux__
  if ((uintptr_t)job->data % DIRECT_ALIGN != 0 || job->length % DIRECT_ALIGN != 0 || job->offset % DIRECT_ALIGN != 0) {
    job->err = EINVAL;
    return;
  }
  if (fcntl(job->fd, F_GETFD) < 0) { /* EBADF, not the ENOENT of its /proc entry */
    job->err = errno;
    return;
  }
  int out = reopen_direct(job->fd, O_WRONLY);
  if (out < 0) {
    job->err = errno;
    return;
  }
  if (pwrite_full(out, job->data, job->length, (off_t)job->offset) != 0) job->err = errno;
  close(out);
#else
  job->err = ENOSYS;
#endif
}

static void write_direct_complete(napi_env env, napi_status status, void *data) {
  WriteJob *job = data;
  settle_count(env, status, job->deferred, job->err, (int64_t)job->length, "pwrite");
  napi_delete_reference(env, job->keep);
  napi_delete_async_work(env, job->work);
  free(job);
}

/* writeDirect(fd, buffer, length, offset): Promise<length>. Writes buffer[0, length) at `offset`;
 * buffer (from alignedBuffer), length and offset must be aligned to 4096. Rejects with EINVAL where
 * the file system refuses O_DIRECT. The fd stays open until it settles. */
static napi_value write_direct_async(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "writeDirect(fd, buffer, length, offset)")) return NULL;
  bool is_buffer = false;
  void *bytes = NULL;
  size_t size = 0;
  if (napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &bytes, &size) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "buffer must be a Buffer");
    return NULL;
  }
  WriteJob *job = calloc(1, sizeof *job);
  if (job == NULL) {
    throw_errno(env, ENOMEM, "pwrite", NULL);
    return NULL;
  }
  int64_t length = 0;
  if (!get_fd(env, argv[0], &job->fd) || !get_offset(env, argv[2], &length) || !get_offset(env, argv[3], &job->offset)) {
    free(job);
    return NULL;
  }
  if ((size_t)length > size) {
    free(job);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "length is past the end of the buffer");
    return NULL;
  }
  job->data = bytes;
  job->length = (size_t)length;
  return queue_job_keeping(env, argv[1], &job->keep, "sfm:write_direct", write_direct_execute, write_direct_complete, job,
                           &job->work, &job->deferred);
}

static void free_aligned(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* alignedBuffer(size): a Buffer of `size` bytes whose memory starts at a multiple of 4096, for
 * writeDirect. */
static napi_value aligned_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t size = 0;
  if (!get_args(env, info, 1, argv, "alignedBuffer(size)") || !get_offset(env, argv[0], &size)) return NULL;
  void *memory = NULL;
  if (posix_memalign(&memory, DIRECT_ALIGN, size > 0 ? (size_t)size : DIRECT_ALIGN) != 0) {
    throw_errno(env, ENOMEM, "posix_memalign", NULL);
    return NULL;
  }
  napi_value result;
  if (napi_create_external_buffer(env, (size_t)size, memory, free_aligned, NULL, &result) != napi_ok) {
    free(memory);
    return NULL;
  }
  return result;
}

/* openTmpfile(dir: string, mode: number): number. A new regular file with no name, on the file system
 * of `dir` (open(2) with O_TMPFILE): nothing can see it until linkFd() names it, and if the process
 * dies first the kernel frees it, so no half-written file is ever left behind. Throws EOPNOTSUPP (or
 * EISDIR, EINVAL on old kernels) where the file system cannot. */
static napi_value open_tmpfile(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv, "openTmpfile(dir, mode)")) return NULL;
  uint32_t mode;
  if (napi_get_value_uint32(env, argv[1], &mode) != napi_ok || mode > 07777) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "mode must be a permission number");
    return NULL;
  }
  char *dir = get_path(env, argv[0], "open");
  if (dir == NULL) return NULL;
#if defined(__linux__) && defined(O_TMPFILE)
  /* no O_EXCL: that would forbid linkFd() */
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, (mode_t)mode);
  int err = errno;
#else
  int fd = -1;
  int err = EOPNOTSUPP;
#endif
  free(dir);
  if (fd < 0) {
    throw_errno(env, err, "open", argv[0]);
    return NULL;
  }
  napi_value result;
  NAPI_OK(napi_create_int32(env, fd, &result));
  return result;
}

/* The elements of a typed array argument of the given type, or NULL if it is not one. */
static void *typed_array_data(napi_env env, napi_value value, napi_typedarray_type want, size_t *length) {
  napi_typedarray_type type;
  void *data = NULL;
  bool is_typed = false;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, length, &data, NULL, NULL) != napi_ok || type != want) {
    return NULL;
  }
  return data;
}

/* linkFd(fd: number, path: string, identity?: BigInt64Array): undefined. Gives the file open as `fd`
 * (from openTmpfile) the name `path`, which must not exist (EEXIST). linkat(2) with AT_EMPTY_PATH needs
 * a capability that an unprivileged process may lack; the same link through /proc/self/fd needs none.
 * With `identity` (two elements), the file's inode number and ctime (ns) after the link are written
 * there, or a ctime of -1 if fstat(2) failed: the link moved the ctime, and the mirror keeps it. */
static napi_value link_fd(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "linkFd(fd, path, identity?)");
    return NULL;
  }
  int64_t *identity = NULL;
  size_t identity_len = 0;
  napi_valuetype third = napi_undefined;
  if (argc == 3 && napi_typeof(env, argv[2], &third) == napi_ok && third != napi_undefined) {
    identity = typed_array_data(env, argv[2], napi_bigint64_array, &identity_len);
    if (identity == NULL || identity_len < 2) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "identity must be a BigInt64Array of two elements");
      return NULL;
    }
  }
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;
  char *path = get_path(env, argv[1], "link");
  if (path == NULL) return NULL;
#ifdef __linux__
  int rc = linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH);
  int err = errno;
  if (rc != 0 && (err == ENOENT || err == EPERM)) {
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    rc = linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
    err = errno;
  }
#else
  int rc = -1;
  int err = ENOSYS;
#endif
  free(path);
  if (rc != 0) {
    throw_errno(env, err, "link", argv[1]);
    return NULL;
  }
  if (identity != NULL) {
    struct stat st;
    if (fstat(fd, &st) == 0) {
      identity[0] = (int64_t)st.st_ino;
      identity[1] = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
    } else {
      identity[1] = -1;
    }
  }
  return NULL;
}

/* createFiles makes many small unnamed files in one trip through the thread pool: for each, open(2)
 * with O_TMPFILE, its bytes, its mode and its mtime. A burst of small uploads (100,000 files of 1 KiB)
 * cost sfmd's main thread about 14 us of system calls per file when each was made there; here they
 * overlap with the main thread receiving and checking the next files. */
typedef struct {
  const uint8_t *data;
  size_t length;
} NewFileData;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep_data, keep_modes, keep_mtimes;
  char *dir;
  int32_t *modes; /* per file: its mode; then its fd, or -errno */
  const int64_t *mtimes;
  size_t count;
  NewFileData files[];
} CreateJob;

static int create_one(const char *dir, const uint8_t *data, size_t len, uint32_t mode, int64_t mtime_ns) {
#if defined(__linux__) && defined(O_TMPFILE)
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  int64_t sec = mtime_ns / 1000000000, nsec = mtime_ns % 1000000000;
  if (nsec < 0) {
    sec -= 1;
    nsec += 1000000000;
  }
  struct timespec times[2] = {{0, UTIME_OMIT}, {(time_t)sec, (long)nsec}};
  if (pwrite_full(fd, (const char *)data, len, 0) != 0 || fchmod(fd, (mode_t)mode) != 0 || futimens(fd, times) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
#else
  (void)dir, (void)data, (void)len, (void)mode, (void)mtime_ns;
  return -EOPNOTSUPP;
#endif
}

static void create_execute(napi_env env, void *data) {
  (void)env;
  CreateJob *job = data;
  for (size_t i = 0; i < job->count; i++) {
    job->modes[i] = create_one(job->dir, job->files[i].data, job->files[i].length, (uint32_t)job->modes[i], job->mtimes[i]);
  }
}

/* Settles the promise of a job whose results are in arrays the caller holds: with undefined, or, if
 * the job was cancelled (only at env teardown), with an EINTR error of `syscall`. */
static void settle_done(napi_env env, napi_status status, napi_deferred deferred, const char *syscall) {
  napi_value result = NULL;
  if (status == napi_ok) {
    napi_get_undefined(env, &result);
    napi_resolve_deferred(env, deferred, result);
    return;
  }
  result = make_errno_error(env, EINTR, syscall, NULL);
  if (result == NULL) napi_get_and_clear_last_exception(env, &result);
  napi_reject_deferred(env, deferred, result);
}

static void create_complete(napi_env env, napi_status status, void *data) {
  CreateJob *job = data;
  settle_done(env, status, job->deferred, "open");
  napi_delete_reference(env, job->keep_data);
  napi_delete_reference(env, job->keep_modes);
  napi_delete_reference(env, job->keep_mtimes);
  napi_delete_async_work(env, job->work);
  free(job->dir);
  free(job);
}

/* The NUL-ended strings of `value`, `count` of them exactly, in a new buffer; NULL (with an error
 * thrown) otherwise. */
static char *get_path_list(napi_env env, napi_value value, size_t count, const char *syscall) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "paths must be a string");
    return NULL;
  }
  char *list = malloc(len + 1);
  if (list == NULL) {
    throw_errno(env, ENOMEM, syscall, NULL);
    return NULL;
  }
  napi_get_value_string_utf8(env, value, list, len + 1, &len);
  size_t ends = 0;
  for (size_t i = 0; i < len; i++) ends += list[i] == '\0';
  if (ends != count || (len > 0 && list[len - 1] != '\0')) {
    free(list);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "paths must hold one NUL-ended path per file");
    return NULL;
  }
  return list;
}

/* createFiles(dir: string, data: Uint8Array[], modes: Int32Array, mtimes: BigInt64Array):
 * Promise<undefined>. File i gets the bytes data[i], the mode modes[i] and the mtime mtimes[i] (ns).
 * When the promise resolves, modes[i] is replaced by the file's fd (an unnamed file on the file
 * system of `dir`, written, with its mode and mtime set), or by -errno. The arrays, and the bytes,
 * must stay untouched until then. */
static napi_value create_files(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "createFiles(dir, data, modes, mtimes)")) return NULL;
  size_t modes_len = 0, mtimes_len = 0;
  uint32_t count = 0;
  bool is_array = false;
  int32_t *modes = typed_array_data(env, argv[2], napi_int32_array, &modes_len);
  const int64_t *mtimes = typed_array_data(env, argv[3], napi_bigint64_array, &mtimes_len);
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[1], &count) != napi_ok ||
      count == 0 || modes == NULL || mtimes == NULL || modes_len != count || mtimes_len != count) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "createFiles(dir: string, data: Uint8Array[], modes: Int32Array, mtimes: BigInt64Array), one of each per file");
    return NULL;
  }
  for (size_t i = 0; i < count; i++) {
    if (modes[i] < 0 || modes[i] > 07777) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "createFiles: a mode is out of range");
      return NULL;
    }
  }
  CreateJob *job = calloc(1, sizeof *job + count * sizeof(NewFileData));
  if (job == NULL) {
    throw_errno(env, ENOMEM, "open", NULL);
    return NULL;
  }
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    size_t length = 0;
    const uint8_t *bytes = NULL;
    if (napi_get_element(env, argv[1], i, &element) == napi_ok) bytes = typed_array_data(env, element, napi_uint8_array, &length);
    if (bytes == NULL && length > 0) {
      free(job);
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "createFiles: each file's data must be a Uint8Array");
      return NULL;
    }
    job->files[i] = (NewFileData){bytes, length};
  }
  char *dir = get_path(env, argv[0], "open");
  if (dir == NULL) {
    free(job);
    return NULL;
  }
  job->dir = dir;
  job->modes = modes;
  job->mtimes = mtimes;
  job->count = count;
  if (napi_create_reference(env, argv[2], 1, &job->keep_modes) != napi_ok) goto fail;
  if (napi_create_reference(env, argv[3], 1, &job->keep_mtimes) != napi_ok) {
    napi_delete_reference(env, job->keep_modes);
    goto fail;
  }
  napi_ref keep_modes = job->keep_modes, keep_mtimes = job->keep_mtimes;
  napi_value promise = queue_job_keeping(env, argv[1], &job->keep_data, "sfm:create_files", create_execute,
                                         create_complete, job, &job->work, &job->deferred);
  if (promise == NULL) { /* queue_job_keeping freed the job */
    napi_delete_reference(env, keep_modes);
    napi_delete_reference(env, keep_mtimes);
    free(dir);
  }
  return promise;
fail:
  free(dir);
  free(job);
  return NULL;
}

/* readFiles reads many small files in one trip through the thread pool, as a client's read-ahead
 * asks for them: for each, open(2), fstat(2), its bytes, fstat(2) again and close(2). Made one by one
 * on the main thread (sfmc, 100,000 files of 1 KiB), these and the BigInt stat objects Node builds
 * for them were a sixth of its CPU time, and they held up everything else it does. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep_out, keep_sizes, keep_stats;
  char *paths; /* NUL-separated */
  size_t count;
  uint8_t *out;
  int32_t *sizes;  /* per file: room in `out` (one byte more than the file may have), then the result */
  int64_t *stats;  /* per file: ino, size, mtime_ns, ctime_ns */
} ReadJob;

static int64_t ns_of(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

/* The bytes read (at most room - 1, else -EFBIG), or -errno; -EAGAIN if the file changed meanwhile. */
static int32_t read_one(const char *path, uint8_t *into, int32_t room, int64_t *stat_out) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat before, after;
  int32_t result;
  if (fstat(fd, &before) != 0) {
    result = -errno;
  } else if (!S_ISREG(before.st_mode)) {
    result = S_ISDIR(before.st_mode) ? -EISDIR : -EINVAL;
  } else if (before.st_size >= room) {
    result = -EFBIG;
  } else {
    size_t want = (size_t)before.st_size + 1; /* one spare byte shows a file that grew */
    size_t n = 0;
    result = 0;
    while (n < want) {
      size_t asked = want - n;
      ssize_t got = pread(fd, into + n, asked, (off_t)n);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        result = -errno;
        break;
      }
      n += (size_t)got;
      if ((size_t)got < asked) break; /* a short read of a regular file ends at its end: no call more */
    }
    if (result == 0) {
      if (fstat(fd, &after) != 0) {
        result = -errno;
      } else if (n != (size_t)before.st_size || after.st_ino != before.st_ino || after.st_size != before.st_size ||
                 ns_of(after.st_mtim) != ns_of(before.st_mtim) || ns_of(after.st_ctim) != ns_of(before.st_ctim)) {
        result = -EAGAIN;
      } else {
        result = (int32_t)n;
        stat_out[0] = (int64_t)before.st_ino;
        stat_out[1] = (int64_t)before.st_size;
        stat_out[2] = ns_of(before.st_mtim);
        stat_out[3] = ns_of(before.st_ctim);
      }
    }
  }
  close(fd);
  return result;
}

static void read_execute(napi_env env, void *data) {
  (void)env;
  ReadJob *job = data;
  const char *path = job->paths;
  size_t off = 0;
  for (size_t i = 0; i < job->count; i++) {
    int32_t room = job->sizes[i];
    job->sizes[i] = read_one(path, job->out + off, room, job->stats + 4 * i);
    off += (size_t)room;
    path += strlen(path) + 1;
  }
}

static void read_complete(napi_env env, napi_status status, void *data) {
  ReadJob *job = data;
  settle_done(env, status, job->deferred, "read");
  napi_delete_reference(env, job->keep_out);
  napi_delete_reference(env, job->keep_sizes);
  napi_delete_reference(env, job->keep_stats);
  napi_delete_async_work(env, job->work);
  free(job->paths);
  free(job);
}

/* readFiles(paths: string, out: Uint8Array, sizes: Int32Array, stats: BigInt64Array): Promise<undefined>.
 * `paths` holds one path per file, each ended by a NUL; sizes[i] is the room for file i in `out`
 * (files one after another), one byte more than it may have. When the promise resolves, sizes[i] is
 * the bytes read, or -errno: EFBIG for a file that did not fit, EAGAIN for one that changed while it
 * was read; stats[4i..4i+3] holds the ino, size, mtime and ctime (ns) of each file read. The arrays
 * must stay untouched until then. */
static napi_value read_files(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "readFiles(paths, out, sizes, stats)")) return NULL;
  size_t out_len = 0, sizes_len = 0, stats_len = 0;
  uint8_t *out = typed_array_data(env, argv[1], napi_uint8_array, &out_len);
  int32_t *sizes = typed_array_data(env, argv[2], napi_int32_array, &sizes_len);
  int64_t *stats = typed_array_data(env, argv[3], napi_bigint64_array, &stats_len);
  if ((out == NULL && out_len > 0) || sizes == NULL || stats == NULL || stats_len != 4 * sizes_len) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "readFiles(paths: string, out: Uint8Array, sizes: Int32Array, stats: BigInt64Array)");
    return NULL;
  }
  uint64_t room = 0;
  for (size_t i = 0; i < sizes_len; i++) {
    if (sizes[i] < 1) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "readFiles: each file needs room for at least one byte");
      return NULL;
    }
    room += (uint64_t)sizes[i];
  }
  if (room > out_len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "readFiles: the rooms add up to more than out");
    return NULL;
  }
  char *paths = get_path_list(env, argv[0], sizes_len, "read");
  if (paths == NULL) return NULL;
  ReadJob *job = calloc(1, sizeof *job);
  if (job == NULL) {
    free(paths);
    throw_errno(env, ENOMEM, "read", NULL);
    return NULL;
  }
  *job = (ReadJob){.paths = paths, .count = sizes_len, .out = out, .sizes = sizes, .stats = stats};
  if (napi_create_reference(env, argv[2], 1, &job->keep_sizes) != napi_ok) goto fail;
  if (napi_create_reference(env, argv[3], 1, &job->keep_stats) != napi_ok) {
    napi_delete_reference(env, job->keep_sizes);
    goto fail;
  }
  napi_ref keep_sizes = job->keep_sizes, keep_stats = job->keep_stats;
  napi_value promise = queue_job_keeping(env, argv[1], &job->keep_out, "sfm:read_files", read_execute, read_complete,
                                         job, &job->work, &job->deferred);
  if (promise == NULL) { /* queue_job_keeping freed the job */
    napi_delete_reference(env, keep_sizes);
    napi_delete_reference(env, keep_stats);
    free(paths);
  }
  return promise;
fail:
  free(paths);
  free(job);
  return NULL;
}

/* closeFds closes many descriptors in one job on the thread pool: the files of a batch once they are
 * in place. Closed one by one on the main thread (benchmark W2), that was about 5 us per file of the
 * time every batch waits for. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  size_t count;
  int fds[];
} CloseJob;

static void close_execute(napi_env env, void *data) {
  (void)env;
  CloseJob *job = data;
  for (size_t i = 0; i < job->count; i++) close(job->fds[i]); /* an error leaves nothing to undo */
}

static void close_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  CloseJob *job = data;
  napi_value result;
  napi_get_undefined(env, &result);
  napi_resolve_deferred(env, job->deferred, result);
  napi_delete_async_work(env, job->work);
  free(job);
}

/* closeFds(fds: Int32Array): Promise<undefined>. The descriptors are copied: the array may be reused
 * at once, and the descriptors must not be. */
static napi_value close_fds(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, "closeFds(fds)")) return NULL;
  size_t count = 0;
  const int32_t *fds = typed_array_data(env, argv[0], napi_int32_array, &count);
  if (fds == NULL && count > 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "closeFds(fds: Int32Array)");
    return NULL;
  }
  CloseJob *job = calloc(1, sizeof *job + count * sizeof(int));
  if (job == NULL) {
    throw_errno(env, ENOMEM, "close", NULL);
    return NULL;
  }
  job->count = count;
  if (count > 0) memcpy(job->fds, fds, count * sizeof(int));
  return queue_job(env, "sfm:close_fds", close_execute, close_complete, job, &job->work, &job->deferred);
}

/* trimMemory(): boolean. Hands the memory malloc keeps free back to the system (malloc_trim(3)): after
 * a big upload, sfmd's socket reads and copies leave tens of MiB free but mapped in malloc's arenas.
 * True if some was released; false where there is no malloc_trim (not glibc). */
static napi_value trim_memory(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
#ifdef __GLIBC__
  NAPI_OK(napi_get_boolean(env, malloc_trim(0) == 1, &result));
#else
  NAPI_OK(napi_get_boolean(env, false, &result));
#endif
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"utimesNs", NULL, utimes_ns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"futimesNs", NULL, futimes_ns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"syncfs", NULL, syncfs_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"copyFileRange", NULL, copy_file_range_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"copyDirect", NULL, copy_direct_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"cloneRange", NULL, clone_range_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeDirect", NULL, write_direct_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"alignedBuffer", NULL, aligned_buffer, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openTmpfile", NULL, open_tmpfile, NULL, NULL, NULL, napi_enumerable, NULL},
      {"linkFd", NULL, link_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"createFiles", NULL, create_files, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readFiles", NULL, read_files, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFds", NULL, close_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimMemory", NULL, trim_memory, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
