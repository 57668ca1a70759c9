/*
 * embers-agent: the guest agent. Started in the background by /init (before it execs
 * embers-exec), it serves the host over a private channel, never over the guest's network:
 *
 *   - a virtio-serial port named "org.embers.agent.0" (QEMU: virtio-serial-device +
 *     virtserialport, host side a Unix socket per VM), found in /sys/class/virtio-ports;
 *   - else vsock port 5252 (Firecracker: the host connects to the VM's vsock Unix socket and
 *     sends "CONNECT 5252\n").
 *
 * The protocol (host side: src/guest/agent-protocol.ts, the reference). Every message, both
 * ways, is a frame: u32 little-endian length N (of what follows, 1..1 MiB), u8 type, N-1
 * bytes of payload. One request at a time; the host may close between requests.
 *
 *   host -> guest                                  guest -> host
 *   0x01 HELLO    (empty)                          0x81 HELLO_OK  "embers-agent <version>"
 *   0x02 FIXUP    u64 realtime ns, u32 n,          0x82 FIXUP_OK  i64 step ns (new - old
 *                 n entropy bytes, u32 hook                         clock), u32 flags (1: entropy
 *                 timeout ms, hook path (rest,                      added, 2: CRNG reseeded),
 *                 empty: no hook)                                   u8 hook state, i32 hook
 *                                                                   code, hook output tail
 *   0x03 EXEC     u32 timeout ms, u32 flags        0x83 STDOUT / 0x84 STDERR  bytes
 *                 (1: shell, argv[0] is a sh -c    0x85 EXIT      u8 state, i32 code
 *                 script run by the kit's          (states: 0 none, 1 exited with code, 2 killed
 *                 busybox; 2: kit root, not the     by signal code, 3 timed out and killed,
 *                 function's), argv NUL-separated   4 could not start)
 *   any                                            0xFF ERROR     text (bad frame or type)
 *
 * FIXUP sets CLOCK_REALTIME, adds the entropy with RNDADDENTROPY then RNDRESEEDCRNG, then runs
 * the restore hook (chrooted in the function's root, as root, with the function's env, stdin
 * /dev/null) and waits for it at most its timeout. EXEC runs a command the same way, streaming
 * its output; a command not found in the function's root runs as an applet of the kit's
 * busybox (opened before the chroot), so images without a shell can be inspected. A timeout
 * or the host closing the channel kills the command's process group.
 *
 * Built static at kit-build time: gcc -static -Os -s -o embers-agent embers-agent.c
 * Messages go to the console and start with "embers-agent:".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOG_PREFIX "embers-agent: "
#define LOG_BUF 1024
#include "embers-common.h"

#define AGENT_VERSION "1"
#define NEWROOT "/newroot"
#define CONF_PATH "/embers/exec.conf"
#define BUSYBOX "/bin/busybox"
#define HOOK_TAIL 4096

#include "embers-channel.h"

/* ---------- the function's environment (from exec.conf) ---------- */

static char **function_env(void) {
	static char *env[512];
	size_t n = 0;
	int has_path = 0, has_home = 0;
	FILE *f = fopen(CONF_PATH, "re");
	char *line = NULL;
	size_t cap = 0;
	while (f && getline(&line, &cap, f) >= 0 && n < 500) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "env=", 4) != 0) continue;
		char *v = strdup(line + 4), *w = v;
		if (!v) break;
		for (char *r = v; *r; r++) {
			if (*r != '\\') {
				*w++ = *r;
				continue;
			}
			r++;
			*w++ = *r == 'n' ? '\n' : *r == 'r' ? '\r' : *r;
			if (!*r) break;
		}
		*w = '\0';
		if (!strncmp(v, "PATH=", 5)) has_path = 1;
		if (!strncmp(v, "HOME=", 5)) has_home = 1;
		env[n++] = v;
	}
	free(line);
	if (f) fclose(f);
	if (!has_path) env[n++] = "PATH=" DEFAULT_PATH;
	if (!has_home) env[n++] = "HOME=/";
	env[n] = NULL;
	return env;
}

/* ---------- running a command (EXEC and the restore hook) ---------- */

struct run_result {
	int state;
	int code;
};

/*
 * Runs argv (chrooted in the function's root unless kit_root) with stdout/stderr to pipes.
 * Output goes to the host as frames when stream, else into tail (the last HOOK_TAIL bytes).
 * At timeout_ms, or when the host goes away while streaming, the process group is killed.
 */
static struct run_result run_command(char **argv, int shell, int kit_root, uint32_t timeout_ms, int stream, char *tail, size_t *tail_len) {
	struct run_result res = {S_NOSTART, 0};
	int out[2], err[2], status_pipe[2];
	if (pipe2(out, O_CLOEXEC) < 0) return res;
	if (pipe2(err, O_CLOEXEC) < 0) {
		close(out[0]), close(out[1]);
		return res;
	}
	if (pipe2(status_pipe, O_CLOEXEC) < 0) {
		close(out[0]), close(out[1]), close(err[0]), close(err[1]);
		return res;
	}
	char **env = function_env();
	int bb = open(BUSYBOX, O_RDONLY | O_CLOEXEC);
	pid_t pid = fork();
	if (pid == 0) {
		setsid();
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		int nul = open("/dev/null", O_RDONLY);
		if (nul >= 0) dup2(nul, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		if (!kit_root && (chroot(NEWROOT) < 0 || chdir("/") < 0)) {
			dprintf(2, "embers-agent: chroot %s: %s\n", NEWROOT, strerror(errno));
			_exit(125);
		}
		if (kit_root && chdir("/") < 0) _exit(125);
		const char *path = DEFAULT_PATH;
		for (char **e = env; *e; e++)
			if (!strncmp(*e, "PATH=", 5)) path = *e + 5;
		if (shell) {
			char *sh[] = {"sh", "-c", argv[0], NULL};
			fexecve(bb, sh, env);
		} else {
			char *prog = strchr(argv[0], '/') ? argv[0] : path_lookup(argv[0], path);
			if (prog) execve(prog, argv, env);
			if (prog && errno != ENOENT) {
				dprintf(2, "embers-agent: %s: %s\n", prog, strerror(errno));
				_exit(126);
			}
			/* not in the function's root: the kit's busybox applet of that name */
			if (!strchr(argv[0], '/')) fexecve(bb, argv, env);
		}
		int e = errno;
		dprintf(2, "embers-agent: %s: %s\n", argv[0], strerror(e));
		ssize_t w = write(status_pipe[1], &e, sizeof e);
		(void)w;
		_exit(127);
	}
	if (bb >= 0) close(bb);
	close(out[1]);
	close(err[1]);
	close(status_pipe[1]);
	if (pid < 0) {
		close(out[0]), close(err[0]), close(status_pipe[0]);
		return res;
	}
	/* while streaming, the channel is watched for the host giving up (host_gave_up) */
	struct host_watch watch = {0};
	struct pollfd pf[2] = {{.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
	long long deadline = timeout_ms ? now_ms() + timeout_ms : 0;
	int status = 0, exited = 0, timed_out = 0;
	long long drain_until = 0;
	/* until the command has exited and its output is read (or what it left holds the pipes too long) */
	for (;;) {
		long long now = now_ms();
		if (exited && ((pf[0].fd < 0 && pf[1].fd < 0) || now >= drain_until)) break;
		if (stream && !broken && host_gave_up(&watch)) {
			logmsg("EXEC %s: the host gave up: the command is stopped", argv[0]);
			broken = 1;
		}
		int wait = 100; /* also polls waitpid: the command may exit while others hold its pipes */
		if (!exited && deadline && deadline - now < wait) wait = deadline > now ? (int)(deadline - now) : 0;
		if (exited) wait = drain_until > now ? (int)(drain_until - now) : 0;
		int r = poll(pf, 2, wait);
		if (r < 0 && errno != EINTR) break;
		for (int i = 0; i < 2 && r > 0; i++) {
			if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
			char buf[16384];
			ssize_t n = read(pf[i].fd, buf, sizeof buf);
			if (n <= 0) {
				close(pf[i].fd);
				pf[i].fd = -1;
				continue;
			}
			if (stream) {
				send_frame(i == 0 ? T_STDOUT : T_STDERR, buf, (size_t)n);
			} else if (tail) {
				if ((size_t)n >= HOOK_TAIL) {
					memcpy(tail, buf + n - HOOK_TAIL, HOOK_TAIL);
					*tail_len = HOOK_TAIL;
				} else {
					size_t keep = *tail_len + (size_t)n > HOOK_TAIL ? HOOK_TAIL - (size_t)n : *tail_len;
					memmove(tail, tail + *tail_len - keep, keep);
					memcpy(tail + keep, buf, (size_t)n);
					*tail_len = keep + (size_t)n;
				}
			}
		}
		if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
			exited = 1;
			kill(-pid, SIGKILL); /* what it left behind in its process group */
			drain_until = now_ms() + 1000;
		} else if (!exited && ((deadline && now_ms() >= deadline) || broken)) {
			timed_out = !broken;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			exited = 1;
			drain_until = now_ms() + 200;
		}
	}
	for (int i = 0; i < 2; i++)
		if (pf[i].fd >= 0) close(pf[i].fd);
	if (!exited) { /* poll failed */
		kill(-pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	int start_errno = 0;
	ssize_t sn = read(status_pipe[0], &start_errno, sizeof start_errno);
	close(status_pipe[0]);
	if (timed_out) {
		res.state = S_TIMEOUT;
	} else if (sn == (ssize_t)sizeof start_errno) {
		res.state = S_NOSTART;
		res.code = start_errno;
	} else if (WIFEXITED(status)) {
		res.state = S_EXITED;
		res.code = WEXITSTATUS(status);
	} else if (WIFSIGNALED(status)) {
		res.state = S_SIGNALED;
		res.code = WTERMSIG(status);
	}
	return res;
}

/* ---------- requests ---------- */

static void do_fixup(const uint8_t *p, size_t n) {
	if (n < 8 + 4) return send_error("FIXUP: payload too short");
	uint64_t ns;
	uint32_t elen, hook_timeout;
	memcpy(&ns, p, 8);
	memcpy(&elen, p + 8, 4);
	if (n < 12 + (size_t)elen + 4) return send_error("FIXUP: payload too short for its entropy");
	const uint8_t *entropy = p + 12;
	memcpy(&hook_timeout, p + 12 + elen, 4);
	const char *hook = (const char *)p + 16 + elen;
	size_t hook_len = n - 16 - elen;

	struct timespec before, to = {.tv_sec = (time_t)(ns / 1000000000ULL), .tv_nsec = (long)(ns % 1000000000ULL)};
	clock_gettime(CLOCK_REALTIME, &before);
	int64_t step = (int64_t)ns - ((int64_t)before.tv_sec * 1000000000LL + before.tv_nsec);
	if (clock_settime(CLOCK_REALTIME, &to) < 0) {
		char m[200];
		snprintf(m, sizeof m, "FIXUP: clock_settime: %s", strerror(errno));
		return send_error(m);
	}
	uint32_t flags = 0;
	if (elen > 0) {
		int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
		if (fd >= 0) {
			struct rand_pool_info *info = malloc(sizeof *info + elen);
			if (info) {
				info->entropy_count = (int)elen * 8;
				info->buf_size = (int)elen;
				memcpy(info->buf, entropy, elen);
				if (ioctl(fd, RNDADDENTROPY, info) == 0) flags |= 1;
				else logmsg("warning: RNDADDENTROPY: %s", strerror(errno));
				free(info);
			}
			if (ioctl(fd, RNDRESEEDCRNG) == 0) flags |= 2;
			else logmsg("warning: RNDRESEEDCRNG: %s", strerror(errno));
			close(fd);
		} else {
			logmsg("warning: /dev/urandom: %s", strerror(errno));
		}
	}
	struct run_result hr = {S_NONE, 0};
	char tail[HOOK_TAIL];
	size_t tail_len = 0;
	if (hook_len > 0) {
		char *path = strndup(hook, hook_len);
		char *argv[] = {path, NULL};
		hr = run_command(argv, 0, 0, hook_timeout, 0, tail, &tail_len);
		logmsg("restore hook %s: state %d code %d", path, hr.state, hr.code);
		free(path);
	}
	uint8_t out[8 + 4 + 1 + 4 + HOOK_TAIL];
	memcpy(out, &step, 8);
	memcpy(out + 8, &flags, 4);
	out[12] = (uint8_t)hr.state;
	int32_t code = hr.code;
	memcpy(out + 13, &code, 4);
	memcpy(out + 17, tail, tail_len);
	send_frame(T_FIXUP_OK, out, 17 + tail_len);
}

static void do_exec(uint8_t *p, size_t n) {
	if (n < 9 || p[n - 1] != '\0') return send_error("EXEC: needs a timeout, flags and a NUL-terminated argv");
	uint32_t timeout, flags;
	memcpy(&timeout, p, 4);
	memcpy(&flags, p + 4, 4);
	char *argv[256];
	size_t argc = 0;
	for (size_t at = 8; at < n && argc < 255;) {
		argv[argc++] = (char *)p + at;
		at += strlen((char *)p + at) + 1;
	}
	argv[argc] = NULL;
	if (argc == 0 || argv[0][0] == '\0') return send_error("EXEC: empty command");
	struct run_result r = run_command(argv, flags & 1, (flags & 2) != 0, timeout, 1, NULL, NULL);
	uint8_t out[5];
	out[0] = (uint8_t)r.state;
	int32_t code = r.code;
	memcpy(out + 1, &code, 4);
	send_frame(T_EXIT, out, 5);
}

/* For tests on the host: serve on a Unix socket instead of the guest channels (the vsock code path). */
static int listen_unix(const char *path) {
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof a.sun_path) return -1;
	strcpy(a.sun_path, path);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(listen_fd, 4) < 0) return -1;
	logmsg("serving on %s (test mode)", path);
	return 0;
}

int main(int argc, char **argv) {
	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && strcmp(argv[1], "--listen-unix") == 0) {
		if (listen_unix(argv[2]) < 0) {
			logmsg("cannot listen on %s: %s", argv[2], strerror(errno));
			return 1;
		}
	} else if (open_channel() < 0) {
		return 0;
	}
	static uint8_t frame[MAX_FRAME];
	if (!serial) wait_for_host();
	for (;;) {
		broken = 0;
		uint32_t len;
		if (read_all(&len, 4) < 0) {
			wait_for_host();
			continue;
		}
		if (len < 1 || len > MAX_FRAME) {
			logmsg("bad frame length %u: the bytes that came with it are dropped", len);
			send_error("bad frame length");
			/* out of step with the host: drop this connection's bytes */
			if (!serial) {
				wait_for_host();
			} else {
				/*
				 * what has arrived (the port is non-blocking); waiting for this host to leave
				 * could swallow the next one's request too (see HOST_GRACE_MS)
				 */
				char junk[4096];
				while (read(chan, junk, sizeof junk) > 0) {
				}
			}
			continue;
		}
		if (read_all(frame, len) < 0) {
			wait_for_host();
			continue;
		}
		switch (frame[0]) {
		case T_HELLO:
			send_frame(T_HELLO_OK, "embers-agent " AGENT_VERSION, strlen("embers-agent " AGENT_VERSION));
			break;
		case T_FIXUP:
			do_fixup(frame + 1, len - 1);
			break;
		case T_EXEC:
			do_exec(frame + 1, len - 1);
			break;
		default:
			send_error("unknown request type");
		}
		if (broken && !serial) wait_for_host();
	}
}
