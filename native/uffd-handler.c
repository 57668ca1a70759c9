/*
 * uffd-handler: the page server for Firecracker's `Uffd` memory backend.
 *
 *   uffd-handler --socket PATH --mem-file FILE [--pid PID] [--stats FILE] [--mode lazy]
 *
 * Firecracker, on PUT /snapshot/load with mem_backend {backend_type: Uffd, backend_path:
 * PATH}, connects to PATH and sends ONE message: its userfaultfd as SCM_RIGHTS, and a JSON
 * body describing its guest memory regions:
 *   [{"base_host_virt_addr":140018953748480,"size":134217728,"offset":0,
 *     "page_size":4096,"page_size_kib":4096}, ...]
 * It touches guest memory during the load itself, so this program accepts and serves before
 * the load call returns. Firecracker keeps the connection open for its lifetime.
 *
 * Serving (mode `lazy`, the only mode today): each missing-page fault at address A of a
 * region is served from the snapshot memory file at region.offset + (A - base):
 * UFFDIO_COPY of that page from a read-only mapping of the file, or UFFDIO_ZEROPAGE when
 * the page lies in a hole of the (sparse) file (SEEK_DATA/SEEK_HOLE). After
 * UFFD_EVENT_REMOVE (balloon, madvise DONTNEED) or UFFD_EVENT_UNMAP of a range, faults in
 * it are served with zero pages, as the guest gave those pages up.
 *
 * Readiness: the socket is bound and listening under a temporary name, then renamed onto
 * PATH, so PATH appears only once a connect succeeds.
 *
 * Exit: when the process that connected exits (its pid from SO_PEERCRED, watched with a
 * pidfd; or --pid PID), or on SIGTERM/SIGINT. Firecracker's side of the connection closing
 * is not enough: some versions drop the socket right after the handshake and go on using
 * the uffd, so the handler keeps serving until the process itself is gone. On exit it writes one JSON line of counters to
 * --stats FILE (or stderr): {"faults":N,"copied":N,"zeroed":N,"removed_ranges":N,...}.
 *
 * Later modes (REAP working sets) plug in at `serve_fault` and `before_serving`: `record`
 * appends each faulting file offset to a working-set file, `prefetch` UFFDIO_COPYs a
 * recorded working set in one sequential pass before serving the remaining faults lazily.
 *
 * Built by scripts/setup.sh: gcc -O2 -Wall -Wextra -o <cache>/uffd-handler native/uffd-handler.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
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
#include <unistd.h>

#define MAX_REGIONS 64
#define MAX_REMOVED 4096
#define BODY_MAX 65536

enum mode { MODE_LAZY };

struct region {
	uint64_t base;   /* host virtual address in Firecracker */
	uint64_t size;
	uint64_t offset; /* offset in the memory file */
	uint64_t page_size;
};

struct range {
	uint64_t start, end;
};

struct stats {
	uint64_t faults, copied, zeroed, removed_ranges, already_mapped;
};

static struct region regions[MAX_REGIONS];
static int nregions;
static struct range removed[MAX_REMOVED];
static int nremoved;
static struct stats st;
static const char *stats_path;
static const char *exit_reason = "unknown";
static volatile sig_atomic_t stop_signal;

static void die(const char *what)
{
	fprintf(stderr, "uffd-handler: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void write_stats(void)
{
	FILE *f = stats_path ? fopen(stats_path, "w") : stderr;
	if (!f)
		f = stderr;
	fprintf(f,
		"{\"faults\":%llu,\"copied\":%llu,\"zeroed\":%llu,\"removed_ranges\":%llu,\"already_mapped\":%llu,"
		"\"regions\":%d,\"exit\":\"%s\"}\n",
		(unsigned long long)st.faults, (unsigned long long)st.copied, (unsigned long long)st.zeroed,
		(unsigned long long)st.removed_ranges, (unsigned long long)st.already_mapped, nregions, exit_reason);
	if (f != stderr)
		fclose(f);
}

static void on_signal(int sig)
{
	stop_signal = sig;
}

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

static int is_removed(uint64_t addr)
{
	for (int i = 0; i < nremoved; i++)
		if (addr >= removed[i].start && addr < removed[i].end)
			return 1;
	return 0;
}

static void mark_removed(uint64_t start, uint64_t end)
{
	st.removed_ranges++;
	for (int i = 0; i < nremoved; i++) {
		if (start <= removed[i].end && end >= removed[i].start) { /* merge overlapping */
			if (start < removed[i].start)
				removed[i].start = start;
			if (end > removed[i].end)
				removed[i].end = end;
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
}

/* True when the file has no data at `off` (a hole, or past its end). */
static int file_hole_at(int fd, off_t off, off_t file_size)
{
	if (off >= file_size)
		return 1;
	off_t data = lseek(fd, off, SEEK_DATA);
	if (data < 0)
		return errno == ENXIO; /* no data from off to the end */
	return data != off;            /* the next data starts later: off is in a hole */
}

struct source {
	int fd;
	const uint8_t *map;
	off_t size;
};

static void zero_page(int uffd, uint64_t addr, uint64_t len)
{
	struct uffdio_zeropage z = { .range = { .start = addr, .len = len }, .mode = 0 };
	while (ioctl(uffd, UFFDIO_ZEROPAGE, &z) < 0) {
		if (errno == EEXIST) {
			st.already_mapped++;
			return;
		}
		if (errno == EAGAIN)
			continue;
		die("UFFDIO_ZEROPAGE");
	}
	st.zeroed++;
}

static void copy_page(int uffd, uint64_t addr, const void *src, uint64_t len)
{
	struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = 0 };
	while (ioctl(uffd, UFFDIO_COPY, &c) < 0) {
		if (errno == EEXIST) {
			st.already_mapped++;
			return;
		}
		if (errno == EAGAIN)
			continue;
		die("UFFDIO_COPY");
	}
	st.copied++;
}

/* Serves one missing-page fault (mode lazy). Other modes add their work here. */
static void serve_fault(enum mode mode, int uffd, const struct source *src, uint64_t fault_addr)
{
	(void)mode;
	st.faults++;
	struct region *r = region_of(fault_addr);
	if (!r) {
		fprintf(stderr, "uffd-handler: fault at 0x%llx outside every region\n", (unsigned long long)fault_addr);
		exit(1);
	}
	uint64_t page = fault_addr & ~(r->page_size - 1);
	uint64_t off = r->offset + (page - r->base);
	if (is_removed(page) || file_hole_at(src->fd, (off_t)off, src->size) || off + r->page_size > (uint64_t)src->size)
		zero_page(uffd, page, r->page_size);
	else
		copy_page(uffd, page, src->map + off, r->page_size);
}

/* Work done once the regions are known, before serving faults (prefetch would go here). */
static void before_serving(enum mode mode)
{
	(void)mode;
}

static int listen_on(const char *path)
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
	strcpy(a.sun_path, tmp);
	unlink(tmp);
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
		die("bind");
	if (listen(s, 1) < 0)
		die("listen");
	if (rename(tmp, path) < 0)
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

int main(int argc, char **argv)
{
	const char *sock = NULL, *mem = NULL;
	pid_t pid = 0;
	enum mode mode = MODE_LAZY;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--socket") && v)
			sock = argv[++i];
		else if (!strcmp(a, "--mem-file") && v)
			mem = argv[++i];
		else if (!strcmp(a, "--pid") && v)
			pid = (pid_t)atoi(argv[++i]);
		else if (!strcmp(a, "--stats") && v)
			stats_path = argv[++i];
		else if (!strcmp(a, "--mode") && v) {
			if (strcmp(argv[++i], "lazy")) {
				fprintf(stderr, "uffd-handler: mode %s is not implemented (only lazy)\n", argv[i]);
				return 64;
			}
		} else {
			fprintf(stderr, "usage: uffd-handler --socket PATH --mem-file FILE [--pid PID] [--stats FILE] [--mode lazy]\n");
			return 64;
		}
	}
	if (!sock || !mem) {
		fprintf(stderr, "usage: uffd-handler --socket PATH --mem-file FILE [--pid PID] [--stats FILE] [--mode lazy]\n");
		return 64;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct source src;
	src.fd = open(mem, O_RDONLY | O_CLOEXEC);
	if (src.fd < 0)
		die(mem);
	struct stat fst;
	if (fstat(src.fd, &fst) < 0)
		die("fstat");
	src.size = fst.st_size;
	src.map = src.size ? mmap(NULL, (size_t)src.size, PROT_READ, MAP_PRIVATE, src.fd, 0) : NULL;
	if (src.map == MAP_FAILED)
		die("mmap the memory file");

	int pidfd = -1;
	if (pid > 0 && (pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
		die("pidfd_open");

	int listener = listen_on(sock);
	/* Wait for the connection, but give up if the process we serve dies first or a signal comes. */
	for (;;) {
		struct pollfd w[2] = { { .fd = listener, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };
		int r = poll(w, pidfd >= 0 ? 2 : 1, -1);
		if (stop_signal) {
			exit_reason = "signal";
			unlink(sock);
			write_stats();
			return 0;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("poll");
		if (pidfd >= 0 && w[1].revents) {
			exit_reason = "process-exited";
			unlink(sock);
			write_stats();
			return 0;
		}
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
	before_serving(mode);

	for (;;) {
		struct pollfd w[3] = {
			{ .fd = uffd, .events = POLLIN },
			{ .fd = pidfd, .events = POLLIN }, /* fd -1 is ignored by poll */
			{ .fd = conn, .events = POLLIN | POLLRDHUP },
		};
		int r = poll(w, 3, -1);
		if (stop_signal) {
			exit_reason = "signal";
			break;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("poll");
		if (w[0].revents & POLLIN) {
			struct uffd_msg m;
			ssize_t n;
			while ((n = read(uffd, &m, sizeof m)) == sizeof m) {
				switch (m.event) {
				case UFFD_EVENT_PAGEFAULT:
					serve_fault(mode, uffd, &src, m.arg.pagefault.address);
					break;
				case UFFD_EVENT_REMOVE:
				case UFFD_EVENT_UNMAP:
					mark_removed(m.arg.remove.start, m.arg.remove.end);
					break;
				default:
					break; /* fork, remap: Firecracker does neither to guest memory */
				}
			}
			if (n < 0 && errno != EAGAIN)
				die("read the userfaultfd");
		}
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
	}
	write_stats();
	return 0;
}
