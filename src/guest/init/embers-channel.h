/*
 * embers-agent's channel to the host: the protocol's constants (the reference is
 * src/guest/agent-protocol.ts; the frame layout is in embers-agent.c's header comment),
 * finding and opening the channel (a virtio-serial port, else vsock), waiting for the host,
 * and frame I/O. Header-only, included once by embers-agent.c after embers-common.h (logmsg,
 * LOG_PREFIX), so the agent stays one gcc call (src/guest/initramfs.ts compileExecHelper).
 */
#ifndef EMBERS_CHANNEL_H
#define EMBERS_CHANNEL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define PORT_NAME "org.embers.agent.0"
#define VSOCK_PORT 5252
#define MAX_FRAME (1024 * 1024)

enum {
	T_HELLO = 0x01,
	T_FIXUP = 0x02,
	T_EXEC = 0x03,
	T_HELLO_OK = 0x81,
	T_FIXUP_OK = 0x82,
	T_STDOUT = 0x83,
	T_STDERR = 0x84,
	T_EXIT = 0x85,
	T_ERROR = 0xff,
};
enum { S_NONE = 0, S_EXITED = 1, S_SIGNALED = 2, S_TIMEOUT = 3, S_NOSTART = 4 };

/* ---------- the channel ---------- */

static int chan = -1;      /* the fd requests come from and replies go to */
static int serial = 0;     /* 1: a virtio-serial port (stays open), 0: an accepted vsock connection */
static int listen_fd = -1; /* vsock listener */
static int broken = 0;     /* the host went away: abandon the current request */

/*
 * A virtio-serial port learns that the host connected or left from control messages, which
 * the guest kernel handles apart from the data. So a request can be read before the port
 * knows that its host is there, or while it still has the previous connection's departure to
 * hear of; meanwhile the port polls POLLHUP, reads end-of-file and refuses writes (EAGAIN: the
 * port is non-blocking) as if the host had gone. So the agent believes a departure only once
 * it has lasted HOST_GRACE_MS. (Frames a departed host left unread could then reach its next
 * connection: the host discards what comes before the answer to its HELLO.)
 */
#define HOST_GRACE_MS 3000

/* When the port was first seen without its host (0: it has one). */
struct host_watch {
	long long hup_since;
};

/* Whether the host abandoned the request being served: it left for HOST_GRACE_MS, or sent something (a new request). */
static int host_gave_up(struct host_watch *w) {
	struct pollfd pf = {.fd = chan, .events = POLLIN};
	if (poll(&pf, 1, 0) < 0) return 0;
	if (!(pf.revents & (POLLHUP | POLLERR))) {
		w->hup_since = 0;
		return (pf.revents & POLLIN) != 0;
	}
	if (!serial) return 1;
	long long now = now_ms();
	if (!w->hup_since) w->hup_since = now;
	return now - w->hup_since > HOST_GRACE_MS;
}

static int write_all(int fd, const void *p, size_t n) {
	const char *c = p;
	struct host_watch watch = {0};
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR) continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pf = {.fd = fd, .events = POLLOUT};
			if (poll(&pf, 1, 5000) <= 0) return -1;
			if ((pf.revents & POLLHUP) && !(pf.revents & POLLOUT)) {
				/* the port has no host now: see HOST_GRACE_MS */
				if (host_gave_up(&watch)) return -1;
				usleep(10000);
			}
			continue;
		}
		if (w <= 0) return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static void send_frame(uint8_t type, const void *payload, size_t n) {
	if (broken) return;
	uint8_t head[5];
	uint32_t len = (uint32_t)n + 1;
	memcpy(head, &len, 4); /* x86-64: little-endian */
	head[4] = type;
	if (write_all(chan, head, 5) < 0 || (n && write_all(chan, payload, n) < 0)) broken = 1;
}

static void send_error(const char *msg) { send_frame(T_ERROR, msg, strlen(msg)); }

/* Reads exactly n bytes; -1 when the host closed (or the channel failed). */
static int read_all(void *p, size_t n) {
	char *c = p;
	long long eof_since = 0;
	while (n > 0) {
		ssize_t r = read(chan, c, n);
		if (r < 0 && errno == EINTR) continue;
		if (r < 0 && errno == EAGAIN) {
			struct pollfd pf = {.fd = chan, .events = POLLIN};
			poll(&pf, 1, 1000);
			continue;
		}
		if (r == 0 && serial && c != (char *)p) {
			/* end-of-file inside a frame: the port may not know yet that the host is there */
			if (!eof_since) eof_since = now_ms();
			if (now_ms() - eof_since <= HOST_GRACE_MS) {
				usleep(10000);
				continue;
			}
		}
		if (r <= 0) return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

static int find_serial_port(char *dev, size_t size) {
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d) return -1;
	struct dirent *e;
	int found = -1;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		char path[300], name[128] = {0};
		snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) continue;
		ssize_t r = read(fd, name, sizeof name - 1);
		close(fd);
		if (r <= 0) continue;
		name[strcspn(name, "\n")] = '\0';
		if (strcmp(name, PORT_NAME) == 0) {
			snprintf(dev, size, "/dev/%s", e->d_name);
			found = 0;
			break;
		}
	}
	closedir(d);
	return found;
}

static int serial_epoll = -1;

/*
 * Waits until the host is there. A virtio-serial port reads end-of-file while no host is
 * connected, and poll() keeps reporting it (POLLHUP), so a level-triggered wait cannot block.
 * The port's wait queue is woken when the host connects (and when data arrives): an
 * edge-triggered epoll wakes exactly then, and a wake-up that came before epoll_wait is kept
 * in its ready list, so none is lost. The timeout only bounds a wait that missed one anyway.
 */
static void wait_for_host(void) {
	if (serial) {
		struct epoll_event ev;
		if (serial_epoll < 0 || epoll_wait(serial_epoll, &ev, 1, 1000) < 0) usleep(100000);
		return;
	}
	if (chan >= 0) close(chan);
	for (;;) {
		chan = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (chan >= 0) return;
		if (errno != EINTR) {
			logmsg("vsock accept: %s", strerror(errno));
			sleep(1);
		}
	}
}

static int open_channel(void) {
	char dev[300];
	/* the port appears once virtio_console has probed it; under TCG that can take a while */
	for (int i = 0; i < 300; i++) {
		if (find_serial_port(dev, sizeof dev) == 0) {
			for (int j = 0; j < 100; j++) {
				chan = open(dev, O_RDWR | O_CLOEXEC);
				if (chan >= 0) break;
				usleep(10000);
			}
			if (chan < 0) {
				logmsg("cannot open %s: %s", dev, strerror(errno));
				return -1;
			}
			serial = 1;
			fcntl(chan, F_SETFL, fcntl(chan, F_GETFL) | O_NONBLOCK); /* a write never waits for a host that left */
			serial_epoll = epoll_create1(EPOLL_CLOEXEC);
			struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
			if (serial_epoll < 0 || epoll_ctl(serial_epoll, EPOLL_CTL_ADD, chan, &ev) < 0) {
				logmsg("warning: epoll on %s: %s (polling instead)", dev, strerror(errno));
				if (serial_epoll >= 0) close(serial_epoll);
				serial_epoll = -1;
			}
			logmsg("serving on %s (virtio-serial %s)", dev, PORT_NAME);
			return 0;
		}
		/* the port appears when virtio_console has probed; vsock is there at once */
		listen_fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (listen_fd >= 0) {
			struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = VSOCK_PORT};
			if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(listen_fd, 4) == 0) {
				/* a vsock device answers CID queries; without one, keep looking for the port */
				unsigned int cid = 0;
				int dfd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
				int have = dfd >= 0 && ioctl(dfd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) == 0 && cid > 2 && cid != VMADDR_CID_ANY;
				if (dfd >= 0) close(dfd);
				if (have) {
					logmsg("serving on vsock port %d (cid %u)", VSOCK_PORT, cid);
					return 0;
				}
			}
			close(listen_fd);
			listen_fd = -1;
		}
		usleep(100000);
	}
	logmsg("no host channel (no virtio-serial port %s, no vsock): not serving", PORT_NAME);
	return -1;
}

#endif
