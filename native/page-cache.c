/*
 * page-cache: the page-cache syscalls Node lacks, for the QEMU side of REAP working sets
 * (src/memory/page-cache.ts). Built by scripts/setup.sh (and on first use) with gcc.
 *
 *   page-cache evict FILE
 *       fdatasync, then posix_fadvise(POSIX_FADV_DONTNEED) on FILE only: its pages leave the
 *       page cache (pages some process still maps stay). Prints "resident N", the pages left.
 *   page-cache resident FILE
 *       mmap FILE (shared, read-only: mapping it faults nothing in) and mincore(): prints one
 *       line "FIRST COUNT" per run of resident pages, in file order.
 *   page-cache prefetch FILE WORKERS
 *       reads "FIRST COUNT" page ranges from stdin and makes them resident: the ranges are
 *       sorted by offset and split into WORKERS shares of about equal bytes, each read in file
 *       order by its own thread with pread() (so every page is in the cache when this exits,
 *       unlike the asynchronous POSIX_FADV_WILLNEED). Prints "pages BYTES_READ".
 *
 * Pages are 4096 bytes (the working-set format's page size). Exit 0 on success, 1 on a
 * failed syscall (message on stderr), 64 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096ULL

struct range {
  uint64_t first;
  uint64_t count;
};

static int die(const char *what, const char *file) {
  fprintf(stderr, "page-cache: %s %s: %s\n", what, file, strerror(errno));
  return 1;
}

static int open_file(const char *path, off_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) < 0) {
    close(fd);
    return -1;
  }
  *size = st.st_size;
  return fd;
}

/* Prints the resident runs of the file (or only their total when quiet); returns pages, -1 on error. */
static long long resident(const char *path, int quiet) {
  off_t size;
  int fd = open_file(path, &size);
  if (fd < 0) return -1;
  if (size == 0) {
    close(fd);
    return 0;
  }
  void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return -1;
  size_t pages = ((size_t)size + PAGE - 1) / PAGE;
  unsigned char *vec = malloc(pages);
  if (!vec || mincore(map, (size_t)size, vec) < 0) {
    free(vec);
    munmap(map, (size_t)size);
    return -1;
  }
  long long total = 0;
  for (size_t i = 0; i < pages;) {
    if (!(vec[i] & 1)) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < pages && (vec[j] & 1)) j++;
    if (!quiet) printf("%zu %zu\n", i, j - i);
    total += (long long)(j - i);
    i = j;
  }
  free(vec);
  munmap(map, (size_t)size);
  return total;
}

struct share {
  int fd;
  struct range *ranges;
  size_t n;
  uint64_t bytes;
  int err;
};

static void *read_share(void *arg) {
  struct share *s = arg;
  size_t bufsize = 1 << 20;
  char *buf = malloc(bufsize);
  if (!buf) {
    s->err = ENOMEM;
    return NULL;
  }
  for (size_t i = 0; i < s->n; i++) {
    uint64_t off = s->ranges[i].first * PAGE, left = s->ranges[i].count * PAGE;
    while (left > 0) {
      size_t want = left < bufsize ? (size_t)left : bufsize;
      ssize_t got = pread(s->fd, buf, want, (off_t)off);
      if (got < 0) {
        if (errno == EINTR) continue;
        s->err = errno;
        free(buf);
        return NULL;
      }
      if (got == 0) break; /* past the end of the file: nothing to cache */
      s->bytes += (uint64_t)got;
      off += (uint64_t)got;
      left -= (uint64_t)got;
    }
  }
  free(buf);
  return NULL;
}

static int by_first(const void *a, const void *b) {
  const struct range *x = a, *y = b;
  return x->first < y->first ? -1 : x->first > y->first;
}

static int prefetch(const char *path, int workers) {
  size_t cap = 1024, n = 0;
  struct range *r = malloc(cap * sizeof *r);
  unsigned long long first, count;
  uint64_t total = 0;
  while (r && scanf("%llu %llu", &first, &count) == 2) {
    if (n == cap) {
      cap *= 2;
      struct range *bigger = realloc(r, cap * sizeof *r);
      if (!bigger) break;
      r = bigger;
    }
    r[n].first = first;
    r[n].count = count;
    total += count;
    n++;
  }
  if (!r) return die("allocating ranges for", path);
  qsort(r, n, sizeof *r, by_first);
  off_t size;
  int fd = open_file(path, &size);
  if (fd < 0) return die("opening", path);
  /* sequential access within each share: let the kernel read ahead */
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  if (workers < 1) workers = 1;
  if ((size_t)workers > n && n > 0) workers = (int)n;
  struct share *shares = calloc((size_t)workers, sizeof *shares);
  pthread_t *threads = calloc((size_t)workers, sizeof *threads);
  if (!shares || !threads) return die("allocating workers for", path);
  /* contiguous shares of about total/workers pages each, in file order */
  size_t at = 0;
  for (int w = 0; w < workers; w++) {
    uint64_t goal = total / (uint64_t)workers + 1, got = 0;
    shares[w].fd = fd;
    shares[w].ranges = r + at;
    while (at < n && (got < goal || w == workers - 1)) got += r[at++].count, shares[w].n++;
  }
  int started = 0;
  for (int w = 0; w < workers; w++) {
    if (pthread_create(&threads[w], NULL, read_share, &shares[w]) != 0) break;
    started++;
  }
  uint64_t bytes = 0;
  int err = started == workers ? 0 : EAGAIN;
  for (int w = 0; w < started; w++) {
    pthread_join(threads[w], NULL);
    bytes += shares[w].bytes;
    if (shares[w].err) err = shares[w].err;
  }
  close(fd);
  free(shares);
  free(threads);
  free(r);
  if (err) {
    errno = err;
    return die("reading", path);
  }
  printf("pages %llu\n", (unsigned long long)bytes);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "evict") == 0) {
    off_t size;
    int fd = open_file(argv[2], &size);
    if (fd < 0) return die("opening", argv[2]);
    /* dirty pages are not dropped: write them back first (a published snapshot's are clean) */
    if (fdatasync(fd) < 0) {
      close(fd);
      return die("fdatasync", argv[2]);
    }
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    if (rc != 0) {
      errno = rc;
      return die("posix_fadvise(DONTNEED)", argv[2]);
    }
    long long left = resident(argv[2], 1);
    if (left < 0) return die("mincore", argv[2]);
    printf("resident %lld\n", left);
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "resident") == 0) {
    if (resident(argv[2], 0) < 0) return die("mincore", argv[2]);
    return 0;
  }
  if (argc == 4 && strcmp(argv[1], "prefetch") == 0) return prefetch(argv[2], atoi(argv[3]));
  fprintf(stderr, "usage: page-cache evict FILE | resident FILE | prefetch FILE WORKERS (ranges \"FIRST COUNT\" on stdin)\n");
  return 64;
}
