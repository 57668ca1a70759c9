/*
 * uffd-handler: the page server for Firecracker's `Uffd` memory backend.
 *
 *   uffd-handler --socket PATH --mem-file FILE [--pid PID] [--stats FILE] [--ready-file PATH]
 *                [--mode lazy|record|prefetch]
 *                [--record FILE]                                        (mode record)
 *                [--ws-ranges FILE [--ws-pages FILE [--ws-pages-sha256 HEX]]] (mode prefetch)
 *                [--chunks FILE --control PATH [--chunk-size BYTES]]    (memory file still arriving)
 *
 * Firecracker, on PUT /snapshot/load with mem_backend {backend_type: Uffd, backend_path:
 * PATH}, connects to PATH and sends ONE message: its userfaultfd as SCM_RIGHTS, and a JSON
 * body describing its guest memory regions:
 *   [{"base_host_virt_addr":140018953748480,"size":134217728,"offset":0,
 *     "page_size":4096,"page_size_kib":4096}, ...]
 * It touches guest memory during the load itself, so this program accepts and serves before
 * the load call returns. Firecracker keeps the connection open for its lifetime.
 *
 * Serving a missing-page fault at address A of a region: the page at file offset
 * region.offset + (A - base) is UFFDIO_COPYed from a read-only mapping of the memory file,
 * or UFFDIO_ZEROPAGE'd when it lies in a hole of the (sparse) file (SEEK_DATA/SEEK_HOLE).
 * After UFFD_EVENT_REMOVE (balloon, madvise DONTNEED) or UFFD_EVENT_UNMAP of a range, faults
 * in it are served with zero pages, as the guest gave those pages up. Faults from several
 * vCPU threads queue on the one uffd and are served in arrival order; a copy that finds the
 * page already present (EEXIST: the prefetcher got there first) counts as served; one that
 * meets EAGAIN (a REMOVE/UNMAP event queued behind it) is deferred until the queue is read.
 *
 * Modes (REAP working sets, format in WS-FORMAT.md: "EMBWS1\0\0", u32 page_size, u32
 * count, count x {u64 first_page, u32 page_count, u32 0}, in first-touch order):
 * - lazy: the above.
 * - record: as lazy, and every page's first fault is logged in order; --record FILE gets a
 *   workingset.ranges file (pages coalesced into a range only when faulted consecutively),
 *   written atomically on exit and whenever SIGUSR1 arrives.
 * - prefetch: right after the handshake a second thread UFFDIO_COPYs the working set
 *   (--ws-ranges) in batches of up to 1 MiB, in first-touch order, from --ws-pages (the
 *   pages' bytes, read and, with --ws-pages-sha256, verified here before any is served) or
 *   else from the memory file at those ranges; faults are served lazily meanwhile and after.
 *
 * A memory file still arriving (--chunks FILE: one sha256 hex per line, chunk i covering
 * bytes [i*size, (i+1)*size) of the memory file, --chunk-size, default 4 MiB): the file has
 * its final size but its chunks are written in any order by a downloader, which connects to
 * the Unix socket --control PATH and speaks lines:
 *   downloader -> handler  "ready N\n"  chunk N is written in full
 *   handler -> downloader  "ok N\n"     chunk N is verified (pages are served from it now)
 *   handler -> downloader  "want N\n"   a fault waits on chunk N: fetch it first
 *   handler -> downloader  "bad N\n"    chunk N did not match its digest
 * On "ready N" the handler reads chunk N into its own memory and checks its sha256; pages are
 * served only from chunks so verified (never from the file, which could still change). A
 * fault on a chunk not yet verified waits (other faults go on being served) and the chunk is
 * asked for once with "want". A chunk that fails its digest is refused: the handler says
 * "bad N" and exits with status 3 (exit reason "chunk-corrupt"), serving nothing more; the
 * process it served sees its connection close. The downloader's connection closing before
 * every chunk was verified is an error too (status 4, "source-gone"). In prefetch mode with
 * chunks, the working set comes from --ws-pages (verified by --ws-pages-sha256) or, without
 * it, from each chunk once verified.
 *
 * Readiness: the socket is bound and listening under a temporary name, then renamed onto
 * PATH, so PATH appears only once a connect succeeds (the control socket is bound before).
 * --ready-file PATH is created once the handshake is done and, in prefetch mode, the working
 * set is in: a driver may hold the VM's resume until it exists (REAP's order).
 *
 * Exit: when the process that connected exits (its pid from SO_PEERCRED, watched with a
 * pidfd; or --pid PID), or on SIGTERM/SIGINT. Firecracker's side of the connection closing
 * is not enough: some versions drop the socket right after the handshake and go on using
 * the uffd, so the handler keeps serving until the process itself is gone. On exit it writes
 * one JSON line of counters to --stats FILE (or stderr).
 *
 * Built by scripts/setup.sh: gcc -O2 -Wall -Wextra -pthread -o <cache>/uffd-handler native/uffd-handler.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h"

#define MAX_REGIONS 64
#define MAX_REMOVED 4096
#define BODY_MAX 65536
#define BATCH_BYTES (1 << 20)

enum mode { MODE_LAZY, MODE_RECORD, MODE_PREFETCH };
static const char *const mode_names[] = { "lazy", "record", "prefetch" };

struct region {
	uint64_t base; /* host virtual address in Firecracker */
	uint64_t size;
	uint64_t offset; /* offset in the memory file */
	uint64_t page_size;
};

struct range {
	uint64_t start, end;
};

struct ws_range {
	uint64_t first_page;
	uint32_t page_count;
	uint32_t reserved;
};

struct stats {
	uint64_t faults, copied, zeroed, removed_ranges, already_mapped;
	uint64_t prefetched, prefetch_ms, recorded, chunks_verified, chunk_waits, wanted;
};

static enum mode mode = MODE_LAZY;
static struct region regions[MAX_REGIONS];
static int nregions;
static struct range removed[MAX_REMOVED];
static int nremoved;
static struct stats st;
static const char *stats_path;
static const char *exit_reason = "unknown";
static int exit_status;
static long long bad_chunk = -1;
static volatile sig_atomic_t stop_signal, flush_signal;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* removed ranges, chunk states */
static pthread_cond_t chunk_cv = PTHREAD_COND_INITIALIZER;
static volatile int stopping; /* tells the prefetcher to give up */
/* An EAGAIN from a copy means the mapping is changing: an event (REMOVE, UNMAP) waits in the
 * uffd's queue. The thread that reads the queue defers the fault and retries it once the queue
 * is drained; the prefetcher tries again. The prefetcher checks for removed ranges and copies
 * under events_lock's read side, and the reader reads each event and records a removed range
 * under its write side: so no prefetched copy can land in a range between the moment the
 * guest gave it up (the kernel zaps it once the event was read) and the moment it is marked. */
static pthread_rwlock_t events_lock = PTHREAD_RWLOCK_INITIALIZER;
static uint64_t *deferred;
static size_t ndeferred, deferred_cap;

/* The memory file. */
static int mem_fd = -1;
static const uint8_t *mem_map;
static off_t mem_size;

/* Chunks of a memory file still arriving. */
static uint64_t chunk_size = 4 << 20;
static long nchunks; /* 0: the memory file is complete, served from mem_map */
static char (*chunk_digest)[65];
static uint8_t *chunk_state; /* 0 missing, 1 verified */
static uint8_t *chunk_wanted;
static uint8_t *verified;   /* private copy of the verified chunks' bytes */
static int control_fd = -1; /* the downloader's connection */
static uint64_t *pending;   /* fault addresses waiting for their chunk */
static size_t npending, pending_cap;

/* Record mode: first-touch order. */
static const char *record_path;
static uint64_t *touched;
static size_t ntouched, touched_cap;
static uint8_t *touched_bits;

/* Prefetch mode. */
static struct ws_range *ws;
static uint32_t nws, ws_page_size;
static const char *ws_pages_path, *ws_pages_sha256, *ready_path;

#define ADD(field, n) __atomic_add_fetch(&st.field, (n), __ATOMIC_RELAXED)

static void die(const char *what)
{
	fprintf(stderr, "uffd-handler: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *fmt, const char *arg)
{
	fprintf(stderr, "uffd-handler: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(1);
}

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void write_stats(void)
{
	FILE *f = stats_path ? fopen(stats_path, "w") : stderr;
	if (!f)
		f = stderr;
	fprintf(f,
		"{\"faults\":%llu,\"copied\":%llu,\"zeroed\":%llu,\"removed_ranges\":%llu,\"already_mapped\":%llu,"
		"\"regions\":%d,\"exit\":\"%s\",\"mode\":\"%s\",\"prefetched\":%llu,\"prefetch_ms\":%llu,\"recorded\":%llu,"
		"\"chunks_verified\":%llu,\"chunk_waits\":%llu,\"wanted\":%llu,\"bad_chunk\":%lld}\n",
		(unsigned long long)st.faults, (unsigned long long)st.copied, (unsigned long long)st.zeroed,
		(unsigned long long)st.removed_ranges, (unsigned long long)st.already_mapped, nregions, exit_reason, mode_names[mode],
		(unsigned long long)st.prefetched, (unsigned long long)st.prefetch_ms, (unsigned long long)st.recorded,
		(unsigned long long)st.chunks_verified, (unsigned long long)st.chunk_waits, (unsigned long long)st.wanted, bad_chunk);
	if (f != stderr)
		fclose(f);
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		flush_signal = 1;
	else
		stop_signal = sig;
}

/* Writes `len` bytes to `path` atomically (a temporary file renamed into place). */
static int write_file_atomic(const char *path, const void *data, size_t len)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, getpid()) >= (int)sizeof tmp)
		return -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	const uint8_t *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			unlink(tmp);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* ---- the handshake's region list ---- */

/* The unsigned integer after "key": in obj (up to end), or -1 if absent. */
static int json_u64(const char *obj, const char *end, const char *key, uint64_t *out)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\"", key);
	const char *p = obj;
	size_t n = strlen(pat);
	while ((p = memmem(p, end - p, pat, n)) != NULL) {
		const char *q = p + n;
		while (q < end && (*q == ' ' || *q == ':'))
			q++;
		if (q < end && *q >= '0' && *q <= '9') {
			*out = strtoull(q, NULL, 10);
			return 0;
		}
		p = q;
	}
	return -1;
}

/* Parses Firecracker's region list: an array of flat objects. */
static void parse_regions(const char *body)
{
	const char *p = body;
	while ((p = strchr(p, '{')) != NULL) {
		const char *end = strchr(p, '}');
		if (!end)
			break;
		if (nregions == MAX_REGIONS) {
			fprintf(stderr, "uffd-handler: more than %d regions\n", MAX_REGIONS);
			exit(1);
		}
		struct region *r = &regions[nregions];
		if (json_u64(p, end, "base_host_virt_addr", &r->base) || json_u64(p, end, "size", &r->size) ||
		    json_u64(p, end, "offset", &r->offset)) {
			fprintf(stderr, "uffd-handler: a region lacks base_host_virt_addr, size or offset: %.*s\n",
				(int)(end - p + 1), p);
			exit(1);
		}
		if (json_u64(p, end, "page_size", &r->page_size) || r->page_size == 0)
			r->page_size = 4096;
		nregions++;
		p = end + 1;
	}
	if (nregions == 0) {
		fprintf(stderr, "uffd-handler: no memory regions in the handshake: %s\n", body);
		exit(1);
	}
}

static struct region *region_of(uint64_t addr)
{
	for (int i = 0; i < nregions; i++)
		if (addr >= regions[i].base && addr < regions[i].base + regions[i].size)
			return &regions[i];
	return NULL;
}

/* The region holding file offset `off`, or NULL. */
static struct region *region_of_offset(uint64_t off)
{
	for (int i = 0; i < nregions; i++)
		if (off >= regions[i].offset && off < regions[i].offset + regions[i].size)
			return &regions[i];
	return NULL;
}

/* ---- removed ranges (shared with the prefetcher) ---- */

static int overlaps_removed(uint64_t start, uint64_t end)
{
	int hit = 0;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nremoved && !hit; i++)
		hit = start < removed[i].end && end > removed[i].start;
	pthread_mutex_unlock(&lock);
	return hit;
}

static void mark_removed(uint64_t start, uint64_t end)
{
	ADD(removed_ranges, 1);
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nremoved; i++) {
		if (start <= removed[i].end && end >= removed[i].start) { /* merge overlapping */
			if (start < removed[i].start)
				removed[i].start = start;
			if (end > removed[i].end)
				removed[i].end = end;
			pthread_mutex_unlock(&lock);
			return;
		}
	}
	if (nremoved == MAX_REMOVED) {
		fprintf(stderr, "uffd-handler: more than %d removed ranges\n", MAX_REMOVED);
		exit(1);
	}
	removed[nremoved].start = start;
	removed[nremoved].end = end;
	nremoved++;
	pthread_mutex_unlock(&lock);
}

/* True when the file has no data at `off` (a hole, or past its end). */
static int file_hole_at(off_t off)
{
	if (off >= mem_size)
		return 1;
	off_t data = lseek(mem_fd, off, SEEK_DATA);
	if (data < 0)
		return errno == ENXIO; /* no data from off to the end */
	return data != off;            /* the next data starts later: off is in a hole */
}

/* ---- filling pages ---- */

/* 0 when filled (or already present), -1 when the process behind the uffd is gone, 1 when
 * the event reader must defer it (EAGAIN before any page was filled). */
static int zero_range(int uffd, uint64_t addr, uint64_t len)
{
	while (len) {
		struct uffdio_zeropage z = { .range = { .start = addr, .len = len }, .mode = 0 };
		if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0) {
			ADD(zeroed, len / 4096);
			return 0;
		}
		if (errno == EAGAIN && z.zeropage > 0) { /* partial: go on after what was done */
			ADD(zeroed, (uint64_t)z.zeropage / 4096);
			addr += (uint64_t)z.zeropage;
			len -= (uint64_t)z.zeropage;
		} else if (errno == EEXIST) { /* the first page is there already */
			ADD(already_mapped, 1);
			addr += 4096;
			len -= 4096;
		} else if (errno == EAGAIN) { /* the mapping is changing (an event is being read) */
			return stopping ? -1 : 1;
		} else if (errno == ESRCH || errno == ENOENT) {
			return -1;
		} else {
			die("UFFDIO_ZEROPAGE");
		}
	}
	return 0;
}

/* Copies len bytes (whole pages) to addr; pages already present are skipped. */
static int copy_range(int uffd, uint64_t addr, const uint8_t *src, uint64_t len, uint64_t *copied)
{
	while (len) {
		struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = 0 };
		if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
			ADD(copied, len / 4096);
			*copied += len / 4096;
			return 0;
		}
		uint64_t step;
		if (errno == EAGAIN && c.copy > 0) {
			step = (uint64_t)c.copy;
			ADD(copied, step / 4096);
			*copied += step / 4096;
		} else if (errno == EEXIST) {
			ADD(already_mapped, 1);
			step = 4096;
		} else if (errno == EAGAIN) { /* the mapping is changing (an event is being read) */
			return stopping ? -1 : 1;
		} else if (errno == ESRCH || errno == ENOENT) {
			return -1;
		} else {
			die("UFFDIO_COPY");
		}
		addr += step;
		src += step;
		len -= step;
	}
	return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
	static const uint8_t zeros[4096];
	for (; n >= sizeof zeros; n -= sizeof zeros, p += sizeof zeros)
		if (memcmp(p, zeros, sizeof zeros))
			return 0;
	return n == 0 || !memcmp(p, zeros, n);
}

/* ---- chunks of a memory file still arriving ---- */

static void control_say(const char *verb, long chunk)
{
	if (control_fd < 0)
		return;
	char line[64];
	int n = snprintf(line, sizeof line, "%s %ld\n", verb, chunk);
	if (write(control_fd, line, (size_t)n) != n) {
		/* the downloader is gone: noticed on its socket */
	}
}

static int chunk_verified(long c)
{
	pthread_mutex_lock(&lock);
	int ok = chunk_state[c] == 1;
	pthread_mutex_unlock(&lock);
	return ok;
}

static void want_chunk(long c)
{
	if (chunk_wanted[c] || control_fd < 0)
		return;
	chunk_wanted[c] = 1;
	ADD(wanted, 1);
	control_say("want", c);
}

/* Reads chunk c from the memory file into our memory and checks its digest: 1 good, 0 bad. */
static int verify_chunk(long c)
{
	uint64_t off = (uint64_t)c * chunk_size;
	uint64_t len = off + chunk_size > (uint64_t)mem_size ? (uint64_t)mem_size - off : chunk_size;
	uint8_t *dst = verified + off;
	for (uint64_t done = 0; done < len;) {
		ssize_t n = pread(mem_fd, dst + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0; /* short: the file is not that long yet */
		done += (uint64_t)n;
	}
	struct sha256 h;
	char hex[65];
	sha256_init(&h);
	sha256_update(&h, dst, len);
	sha256_hex(&h, hex);
	if (strcmp(hex, chunk_digest[c])) {
		memset(dst, 0, len);
		return 0;
	}
	pthread_mutex_lock(&lock);
	chunk_state[c] = 1;
	pthread_cond_broadcast(&chunk_cv);
	pthread_mutex_unlock(&lock);
	ADD(chunks_verified, 1);
	return 1;
}

static void load_chunk_list(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die(path);
	size_t cap = 0;
	char line[256];
	while (fgets(line, sizeof line, f)) {
		size_t n = strcspn(line, "\r\n");
		line[n] = 0;
		if (!n)
			continue;
		if (n != 64 || strspn(line, "0123456789abcdef") != 64)
			fail("the chunk list has a line that is not a sha256 in lowercase hex: %s", line);
		if ((size_t)nchunks == cap) {
			cap = cap ? cap * 2 : 256;
			chunk_digest = realloc(chunk_digest, cap * sizeof *chunk_digest);
			if (!chunk_digest)
				die("realloc");
		}
		memcpy(chunk_digest[nchunks++], line, 65);
	}
	fclose(f);
	if (!nchunks)
		fail("the chunk list %s is empty", path);
}

/* ---- record mode ---- */

static void record_page(uint64_t page)
{
	if (touched_bits[page / 8] & (1 << (page % 8)))
		return; /* a second fault (after a REMOVE) is no first touch */
	touched_bits[page / 8] |= (uint8_t)(1 << (page % 8));
	if (ntouched == touched_cap) {
		touched_cap = touched_cap ? touched_cap * 2 : 4096;
		touched = realloc(touched, touched_cap * sizeof *touched);
		if (!touched)
			die("realloc");
	}
	touched[ntouched++] = page;
	ADD(recorded, 1);
}

static void write_record(void)
{
	if (!record_path)
		return;
	size_t n = 0;
	struct ws_range *out = malloc((ntouched ? ntouched : 1) * sizeof *out);
	if (!out)
		die("malloc");
	for (size_t i = 0; i < ntouched; i++) {
		if (n && out[n - 1].first_page + out[n - 1].page_count == touched[i])
			out[n - 1].page_count++;
		else
			out[n++] = (struct ws_range){ .first_page = touched[i], .page_count = 1, .reserved = 0 };
	}
	size_t len = 16 + n * 16;
	uint8_t *buf = calloc(1, len);
	if (!buf)
		die("calloc");
	memcpy(buf, "EMBWS1\0\0", 8);
	uint32_t page_size = 4096, count = (uint32_t)n;
	memcpy(buf + 8, &page_size, 4); /* little-endian hosts only (x86-64, aarch64) */
	memcpy(buf + 12, &count, 4);
	for (size_t i = 0; i < n; i++) {
		memcpy(buf + 16 + 16 * i, &out[i].first_page, 8);
		memcpy(buf + 24 + 16 * i, &out[i].page_count, 4);
	}
	if (write_file_atomic(record_path, buf, len) < 0)
		fprintf(stderr, "uffd-handler: could not write the working set to %s: %s\n", record_path, strerror(errno));
	free(buf);
	free(out);
}

/* ---- prefetch mode ---- */

static void load_ws_ranges(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die(path);
	struct stat s;
	if (fstat(fd, &s) < 0)
		die("fstat the working set");
	uint8_t head[16];
	if (s.st_size < 16 || pread(fd, head, 16, 0) != 16 || memcmp(head, "EMBWS1\0\0", 8))
		fail("%s is not a working-set ranges file (magic EMBWS1)", path);
	memcpy(&ws_page_size, head + 8, 4);
	memcpy(&nws, head + 12, 4);
	if (ws_page_size != 4096)
		fail("%s has a page size other than 4096", path);
	if ((uint64_t)s.st_size != 16 + (uint64_t)nws * 16)
		fail("%s has a size that does not match its range count", path);
	ws = malloc((nws ? nws : 1) * sizeof *ws);
	if (!ws)
		die("malloc");
	for (uint32_t i = 0; i < nws; i++) {
		uint8_t rec[16];
		if (pread(fd, rec, 16, 16 + 16 * (off_t)i) != 16)
			die("read the working set");
		memcpy(&ws[i].first_page, rec, 8);
		memcpy(&ws[i].page_count, rec + 8, 4);
		if (!ws[i].page_count || (ws[i].first_page + ws[i].page_count) * 4096 > (uint64_t)mem_size)
			fail("%s has a range outside the memory file", path);
	}
	close(fd);
}

/* The working set's pages file, read whole and (with a digest given) verified. */
static uint8_t *load_ws_pages(uint64_t want_bytes)
{
	int fd = open(ws_pages_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die(ws_pages_path);
	struct stat s;
	if (fstat(fd, &s) < 0)
		die("fstat the working-set pages");
	if ((uint64_t)s.st_size != want_bytes)
		fail("%s does not hold exactly the pages of the working set's ranges", ws_pages_path);
	uint8_t *buf = mmap(NULL, want_bytes ? want_bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		die("mmap a buffer for the working-set pages");
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	for (uint64_t done = 0; done < want_bytes;) {
		ssize_t n = read(fd, buf + done, want_bytes - done > (8 << 20) ? (8 << 20) : want_bytes - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("read the working-set pages");
		done += (uint64_t)n;
	}
	close(fd);
	if (ws_pages_sha256) {
		struct sha256 h;
		char hex[65];
		sha256_init(&h);
		sha256_update(&h, buf, want_bytes);
		sha256_hex(&h, hex);
		if (strcmp(hex, ws_pages_sha256))
			fail("%s does not match its sha256: refused", ws_pages_path);
	}
	return buf;
}

static void make_ready(void)
{
	if (ready_path && write_file_atomic(ready_path, mode_names[mode], strlen(mode_names[mode])) < 0)
		fprintf(stderr, "uffd-handler: could not create %s: %s\n", ready_path, strerror(errno));
}

/* Copies pages [off, off+len) of the memory file from src, in one ioctl unless removed pages are in it. */
static int prefetch_batch(int uffd, uint64_t off, uint64_t len, const uint8_t *src, uint64_t *copied)
{
	struct region *r = region_of_offset(off);
	if (!r)
		return 0; /* not guest memory in this restore */
	uint64_t addr = r->base + (off - r->offset);
	for (;;) { /* the whole batch in one ioctl, unless part of it was given up */
		pthread_rwlock_rdlock(&events_lock);
		int rc = overlaps_removed(addr, addr + len) ? 2 : copy_range(uffd, addr, src, len, copied);
		pthread_rwlock_unlock(&events_lock);
		if (rc <= 0)
			return rc;
		if (rc == 2)
			break;
		sched_yield(); /* EAGAIN: let the event be read, then try again */
	}
	for (uint64_t p = 0; p < len; p += 4096) {
		for (;;) {
			pthread_rwlock_rdlock(&events_lock);
			int rc = overlaps_removed(addr + p, addr + p + 4096) ? 0 : copy_range(uffd, addr + p, src + p, 4096, copied);
			pthread_rwlock_unlock(&events_lock);
			if (rc < 0)
				return -1;
			if (rc == 0)
				break;
			sched_yield();
		}
	}
	return 0;
}

static void *prefetcher(void *arg)
{
	int uffd = *(int *)arg;
	uint64_t t0 = now_ms(), copied = 0, total = 0;
	for (uint32_t i = 0; i < nws; i++)
		total += ws[i].page_count;
	uint8_t *pages = ws_pages_path ? load_ws_pages(total * 4096) : NULL;
	uint8_t *bounce = NULL;
	if (!pages && !nchunks && !(bounce = malloc(BATCH_BYTES)))
		die("malloc");
	uint64_t pages_off = 0;
	for (uint32_t i = 0; i < nws && !stopping; i++) {
		uint64_t off = ws[i].first_page * 4096, end = off + (uint64_t)ws[i].page_count * 4096;
		while (off < end && !stopping) {
			uint64_t len = end - off < BATCH_BYTES ? end - off : BATCH_BYTES;
			struct region *r = region_of_offset(off);
			if (r && off + len > r->offset + r->size) /* never across regions */
				len = r->offset + r->size - off;
			const uint8_t *src;
			if (pages) {
				src = pages + pages_off;
			} else if (nchunks) { /* only from verified chunks: wait for each */
				long c = (long)(off / chunk_size);
				if (off + len > (uint64_t)(c + 1) * chunk_size)
					len = (uint64_t)(c + 1) * chunk_size - off;
				pthread_mutex_lock(&lock);
				while (chunk_state[c] != 1 && !stopping)
					pthread_cond_wait(&chunk_cv, &lock);
				pthread_mutex_unlock(&lock);
				if (stopping)
					break;
				src = verified + off;
			} else {
				for (uint64_t done = 0; done < len;) { /* holes read as zeros */
					ssize_t n = pread(mem_fd, bounce + done, len - done, (off_t)(off + done));
					if (n <= 0)
						die("read the memory file");
					done += (uint64_t)n;
				}
				src = bounce;
			}
			if (prefetch_batch(uffd, off, len, src, &copied) < 0) {
				stopping = 1;
				break;
			}
			off += len;
			pages_off += len;
		}
	}
	__atomic_store_n(&st.prefetched, copied, __ATOMIC_RELAXED);
	__atomic_store_n(&st.prefetch_ms, now_ms() - t0, __ATOMIC_RELAXED);
	if (!stopping)
		make_ready();
	if (pages)
		munmap(pages, total ? total * 4096 : 1);
	free(bounce);
	return NULL;
}

/* ---- serving faults ---- */

/* Serves one missing-page fault; 0 when served, 1 when it must wait for its chunk, 2 when it
 * must be retried once the uffd's queue is drained. */
static int serve_fault(int uffd, uint64_t fault_addr, int counted)
{
	int rc = 0;
	if (!counted)
		ADD(faults, 1);
	struct region *r = region_of(fault_addr);
	if (!r) {
		fprintf(stderr, "uffd-handler: fault at 0x%llx outside every region\n", (unsigned long long)fault_addr);
		exit(1);
	}
	uint64_t page = fault_addr & ~(r->page_size - 1);
	uint64_t off = r->offset + (page - r->base);
	uint64_t copied = 0;
	if (overlaps_removed(page, page + r->page_size))
		return zero_range(uffd, page, r->page_size) == 1 ? 2 : 0;
	if (nchunks) {
		long c = (long)(off / chunk_size);
		if (off + r->page_size > (uint64_t)mem_size) {
			rc = zero_range(uffd, page, r->page_size);
		} else if (!chunk_verified(c)) {
			if (!counted)
				ADD(chunk_waits, 1);
			want_chunk(c);
			return 1;
		} else if (all_zero(verified + off, r->page_size)) {
			rc = zero_range(uffd, page, r->page_size);
		} else {
			rc = copy_range(uffd, page, verified + off, r->page_size, &copied);
		}
	} else if (file_hole_at((off_t)off) || off + r->page_size > (uint64_t)mem_size) {
		rc = zero_range(uffd, page, r->page_size);
	} else {
		rc = copy_range(uffd, page, mem_map + off, r->page_size, &copied);
	}
	if (rc == 1)
		return 2;
	if (mode == MODE_RECORD && off / 4096 < (uint64_t)(mem_size + 4095) / 4096)
		record_page(off / 4096);
	return 0;
}

static void add_deferred(uint64_t addr)
{
	if (ndeferred == deferred_cap) {
		deferred_cap = deferred_cap ? deferred_cap * 2 : 64;
		deferred = realloc(deferred, deferred_cap * sizeof *deferred);
		if (!deferred)
			die("realloc");
	}
	deferred[ndeferred++] = addr;
}

static void add_pending(uint64_t addr)
{
	if (npending == pending_cap) {
		pending_cap = pending_cap ? pending_cap * 2 : 64;
		pending = realloc(pending, pending_cap * sizeof *pending);
		if (!pending)
			die("realloc");
	}
	pending[npending++] = addr;
}

/* Serves the waiting faults whose chunks are verified now. */
static void serve_pending(int uffd)
{
	size_t keep = 0;
	for (size_t i = 0; i < npending; i++) {
		int rc = serve_fault(uffd, pending[i], 1);
		if (rc == 1)
			pending[keep++] = pending[i];
		else if (rc == 2)
			add_deferred(pending[i]);
	}
	npending = keep;
}

/* Reads and serves every queued uffd event; -1 when the uffd is gone. */
static void drain_uffd(int uffd)
{
	struct uffd_msg m;
	ssize_t n;
	for (;;) {
		pthread_rwlock_wrlock(&events_lock);
		n = read(uffd, &m, sizeof m);
		if (n == sizeof m && (m.event == UFFD_EVENT_REMOVE || m.event == UFFD_EVENT_UNMAP))
			mark_removed(m.arg.remove.start, m.arg.remove.end);
		pthread_rwlock_unlock(&events_lock);
		if (n != sizeof m)
			break;
		switch (m.event) {
		case UFFD_EVENT_PAGEFAULT: {
			int rc = serve_fault(uffd, m.arg.pagefault.address, 0);
			if (rc == 1)
				add_pending(m.arg.pagefault.address);
			else if (rc == 2)
				add_deferred(m.arg.pagefault.address);
			break;
		}
		default:
			break; /* remove, unmap: recorded above; fork, remap: Firecracker does neither to guest memory */
		}
	}
	if (n < 0 && errno != EAGAIN)
		die("read the userfaultfd");
	/* The queue is empty: retry the faults an EAGAIN deferred (their event has been read now). */
	size_t retry = ndeferred;
	ndeferred = 0;
	for (size_t i = 0; i < retry; i++) {
		int rc = serve_fault(uffd, deferred[i], 1);
		if (rc == 1)
			add_pending(deferred[i]);
		else if (rc == 2)
			add_deferred(deferred[i]);
	}
}

/*
 * After "bad N": the VM's connection is closed first (the VM sees the page server gone, served
 * nothing more), then the downloader is given the time to read the line: our side is half-closed
 * and its writes are read and dropped until it closes its own (at most 5 s). Closing at once
 * would reset the connection while the downloader may still be writing ("ready M"), and a reset
 * can drop the "bad" line it had not read yet.
 */
static void linger_control(int *conn)
{
	if (*conn >= 0) {
		close(*conn);
		*conn = -1;
	}
	if (control_fd < 0)
		return;
	shutdown(control_fd, SHUT_WR);
	char b[512];
	struct pollfd p = { .fd = control_fd, .events = POLLIN };
	for (int waited_ms = 0; waited_ms < 5000;) {
		int r = poll(&p, 1, 100);
		if (r < 0 && errno != EINTR)
			return;
		if (r <= 0) {
			waited_ms += 100;
			continue;
		}
		ssize_t n = read(control_fd, b, sizeof b);
		if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
			return;
	}
}

/* Handles the downloader's lines; returns -1 when a chunk was bad (the handler must stop). */
static int control_lines(int uffd, char *buf, size_t *len)
{
	char *line = buf, *nl;
	while ((nl = memchr(line, '\n', *len - (size_t)(line - buf))) != NULL) {
		*nl = 0;
		long c;
		char extra;
		if (sscanf(line, "ready %ld%c", &c, &extra) == 1 && c >= 0 && c < nchunks) {
			if (!chunk_verified(c)) {
				if (!verify_chunk(c)) {
					control_say("bad", c);
					bad_chunk = c;
					fprintf(stderr, "uffd-handler: chunk %ld of the memory file does not match its sha256: refused\n", c);
					return -1;
				}
				serve_pending(uffd);
			}
			control_say("ok", c);
		} else {
			fprintf(stderr, "uffd-handler: ignoring a control line: %s\n", line);
		}
		line = nl + 1;
	}
	*len -= (size_t)(line - buf);
	memmove(buf, line, *len);
	return 0;
}

static int listen_on(const char *path, int rename_into_place)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char tmp[sizeof a.sun_path];
	if (snprintf(tmp, sizeof tmp, "%s.%d", path, getpid()) >= (int)sizeof tmp || strlen(path) >= sizeof a.sun_path) {
		fprintf(stderr, "uffd-handler: socket path %s is too long\n", path);
		exit(1);
	}
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die("socket");
	const char *bind_path = rename_into_place ? tmp : path;
	strcpy(a.sun_path, bind_path);
	unlink(bind_path);
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
		die("bind");
	if (listen(s, 1) < 0)
		die("listen");
	if (rename_into_place && rename(tmp, path) < 0)
		die("rename the socket into place");
	return s;
}

/* Accepts Firecracker's connection and receives the uffd and the region JSON. */
static int receive_handshake(int listener, int *conn_out)
{
	int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	if (conn < 0)
		die("accept");
	static char body[BODY_MAX + 1];
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = body, .iov_len = BODY_MAX };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
	ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0)
		die("recvmsg");
	int uffd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&uffd, CMSG_DATA(c), sizeof uffd);
	if (uffd < 0) {
		fprintf(stderr, "uffd-handler: the handshake carried no file descriptor (%zd bytes)\n", n);
		exit(1);
	}
	/* The JSON may come in more than one read when it is long: read until it parses as closed. */
	size_t len = (size_t)n;
	body[len] = 0;
	while (len < BODY_MAX && !strchr(body, ']')) {
		ssize_t m = read(conn, body + len, BODY_MAX - len);
		if (m <= 0)
			break;
		len += (size_t)m;
		body[len] = 0;
	}
	parse_regions(body);
	int fl = fcntl(uffd, F_GETFL);
	fcntl(uffd, F_SETFL, fl | O_NONBLOCK);
	*conn_out = conn;
	return uffd;
}

static void usage(void)
{
	fprintf(stderr, "usage: uffd-handler --socket PATH --mem-file FILE [--pid PID] [--stats FILE] [--ready-file PATH]\n"
			"         [--mode lazy|record|prefetch] [--record FILE] [--ws-ranges FILE [--ws-pages FILE [--ws-pages-sha256 HEX]]]\n"
			"         [--chunks FILE --control PATH [--chunk-size BYTES]]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	const char *sock = NULL, *mem = NULL, *ws_ranges_path = NULL, *chunks_path = NULL, *control_path = NULL;
	pid_t pid = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--socket"))
			sock = v;
		else if (!strcmp(a, "--mem-file"))
			mem = v;
		else if (!strcmp(a, "--pid"))
			pid = (pid_t)atoi(v);
		else if (!strcmp(a, "--stats"))
			stats_path = v;
		else if (!strcmp(a, "--ready-file"))
			ready_path = v;
		else if (!strcmp(a, "--record"))
			record_path = v;
		else if (!strcmp(a, "--ws-ranges"))
			ws_ranges_path = v;
		else if (!strcmp(a, "--ws-pages"))
			ws_pages_path = v;
		else if (!strcmp(a, "--ws-pages-sha256"))
			ws_pages_sha256 = v;
		else if (!strcmp(a, "--chunks"))
			chunks_path = v;
		else if (!strcmp(a, "--control"))
			control_path = v;
		else if (!strcmp(a, "--chunk-size"))
			chunk_size = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--mode")) {
			if (!strcmp(v, "lazy"))
				mode = MODE_LAZY;
			else if (!strcmp(v, "record"))
				mode = MODE_RECORD;
			else if (!strcmp(v, "prefetch"))
				mode = MODE_PREFETCH;
			else {
				fprintf(stderr, "uffd-handler: unknown mode %s (lazy, record or prefetch)\n", v);
				return 64;
			}
		} else
			usage();
	}
	if (!sock || !mem)
		usage();
	if (mode == MODE_RECORD && !record_path)
		fail("%s", "mode record needs --record FILE");
	if (mode == MODE_PREFETCH && !ws_ranges_path)
		fail("%s", "mode prefetch needs --ws-ranges FILE");
	if (!!chunks_path != !!control_path)
		fail("%s", "--chunks and --control go together");
	if (chunk_size == 0 || chunk_size % 4096)
		fail("%s", "--chunk-size must be a positive multiple of 4096");

	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	mem_fd = open(mem, O_RDONLY | O_CLOEXEC);
	if (mem_fd < 0)
		die(mem);
	struct stat fst;
	if (fstat(mem_fd, &fst) < 0)
		die("fstat");
	mem_size = fst.st_size;
	if (chunks_path) {
		load_chunk_list(chunks_path);
		if ((uint64_t)mem_size <= (uint64_t)(nchunks - 1) * chunk_size || (uint64_t)mem_size > (uint64_t)nchunks * chunk_size)
			fail("%s", "the memory file's size does not match the chunk list (it must have its final size before the handler starts)");
		chunk_state = calloc((size_t)nchunks, 1);
		chunk_wanted = calloc((size_t)nchunks, 1);
		verified = mmap(NULL, (size_t)mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (!chunk_state || !chunk_wanted || verified == MAP_FAILED)
			die("allocate the chunk table");
	} else {
		mem_map = mem_size ? mmap(NULL, (size_t)mem_size, PROT_READ, MAP_PRIVATE, mem_fd, 0) : NULL;
		if (mem_map == MAP_FAILED)
			die("mmap the memory file");
	}
	if (mode == MODE_RECORD && !(touched_bits = calloc((size_t)(mem_size / 4096 / 8 + 2), 1)))
		die("calloc");
	if (mode == MODE_PREFETCH)
		load_ws_ranges(ws_ranges_path);

	int pidfd = -1;
	if (pid > 0 && (pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
		die("pidfd_open");

	int control_listener = control_path ? listen_on(control_path, 0) : -1;
	int listener = listen_on(sock, 1);
	/* Wait for the connection, but give up if the process we serve dies first or a signal comes. */
	for (;;) {
		struct pollfd w[2] = { { .fd = listener, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };
		int r = poll(w, pidfd >= 0 ? 2 : 1, -1);
		if (stop_signal || (pidfd >= 0 && r > 0 && w[1].revents)) {
			exit_reason = stop_signal ? "signal" : "process-exited";
			unlink(sock);
			if (control_path)
				unlink(control_path);
			write_record();
			write_stats();
			return 0;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("poll");
		if (w[0].revents)
			break;
	}
	int conn;
	int uffd = receive_handshake(listener, &conn);
	close(listener);
	unlink(sock);
	if (pidfd < 0) {
		struct ucred cred;
		socklen_t len = sizeof cred;
		if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0)
			pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
	}
	pthread_t prefetch_thread;
	int prefetching = 0;
	if (mode == MODE_PREFETCH) {
		if (pthread_create(&prefetch_thread, NULL, prefetcher, &uffd))
			die("start the prefetch thread");
		prefetching = 1;
	} else {
		make_ready();
	}

	static char ctl_buf[4096];
	size_t ctl_len = 0;
	for (;;) {
		struct pollfd w[5] = {
			{ .fd = uffd, .events = POLLIN },
			{ .fd = pidfd, .events = POLLIN }, /* fd -1 is ignored by poll */
			{ .fd = conn, .events = POLLIN | POLLRDHUP },
			{ .fd = control_fd < 0 ? control_listener : -1, .events = POLLIN },
			{ .fd = control_fd, .events = POLLIN },
		};
		int r = poll(w, 5, ndeferred ? 1 : -1); /* deferred faults are retried after every drain */
		if (r == 0) {
			drain_uffd(uffd);
			continue;
		}
		if (flush_signal) {
			flush_signal = 0;
			write_record();
		}
		if (stop_signal) {
			exit_reason = "signal";
			break;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("poll");
		if (w[0].revents & POLLIN)
			drain_uffd(uffd);
		if (w[0].revents & (POLLHUP | POLLERR)) {
			exit_reason = "uffd-closed";
			break;
		}
		if (pidfd >= 0 && w[1].revents) {
			exit_reason = "process-exited";
			break;
		}
		if (conn >= 0 && w[2].revents) {
			char b[256];
			if ((w[2].revents & (POLLHUP | POLLRDHUP | POLLERR)) || read(conn, b, sizeof b) <= 0) {
				close(conn);
				conn = -1;
				if (pidfd < 0) { /* nothing else tells us when the peer is gone */
					exit_reason = "peer-closed";
					break;
				}
			}
		}
		if (control_listener >= 0 && control_fd < 0 && (w[3].revents & POLLIN)) {
			control_fd = accept4(control_listener, NULL, NULL, SOCK_CLOEXEC);
			if (control_fd >= 0) { /* ask for what faults already wait on */
				for (size_t i = 0; i < npending; i++) {
					struct region *pr = region_of(pending[i]);
					want_chunk((long)((pr->offset + (pending[i] - pr->base)) / chunk_size));
				}
			}
		}
		if (control_fd >= 0 && w[4].revents) {
			ssize_t n = read(control_fd, ctl_buf + ctl_len, sizeof ctl_buf - 1 - ctl_len);
			if (n > 0) {
				ctl_len += (size_t)n;
				if (control_lines(uffd, ctl_buf, &ctl_len) < 0) {
					exit_reason = "chunk-corrupt";
					exit_status = 3;
					linger_control(&conn);
					break;
				}
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				close(control_fd);
				control_fd = -1;
				if ((long)st.chunks_verified < nchunks) {
					fprintf(stderr, "uffd-handler: the downloader left before every chunk arrived (%llu of %ld verified)\n",
						(unsigned long long)st.chunks_verified, nchunks);
					exit_reason = "source-gone";
					exit_status = 4;
					break;
				}
			}
		}
	}
	stopping = 1;
	if (prefetching) {
		pthread_mutex_lock(&lock);
		pthread_cond_broadcast(&chunk_cv);
		pthread_mutex_unlock(&lock);
		pthread_join(prefetch_thread, NULL);
	}
	if (control_path)
		unlink(control_path);
	write_record();
	write_stats();
	return exit_status;
}
