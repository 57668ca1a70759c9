/*
 * embers-exec: the last stage of the embers guest init. Runs as PID 1 (exec'd by /init)
 * after the function's disk is mounted at /newroot.
 *
 *   1. reads /embers/exec.conf (format: src/guest/exec-conf.ts),
 *   2. forks; the child chroots into /newroot, chdirs to the working directory, resolves the
 *      user against the rootfs's own /etc/passwd and /etc/group (parsed here: no NSS), drops
 *      to it (setgroups, setgid, setuid), looks argv[0] up on PATH if it has no slash, and
 *      execve()s it with exactly the configured environment (plus a default PATH and HOME
 *      if those are not given),
 *   3. the parent stays PID 1: reaps every orphan, forwards SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/
 *      SIGUSR2 to the function, turns the ACPI power button (QEMU `system_powerdown`) and
 *      ctrl-alt-del (Firecracker `SendCtrlAltDel`) into SIGTERM to the function, then SIGKILL
 *      after EMBERS_STOP_TIMEOUT seconds (default 10), and when the function exits logs
 *      "embers-init: function exited: status=N" (or "signal=N"), stops what is left, syncs,
 *      unmounts /newroot (the disk stays consistent) and powers off (or reboots if
 *      EMBERS_HALT=reboot), so the VMM exits.
 *
 * Built static at kit-build time: gcc -static -Os -o embers-exec embers-exec.c
 * All messages go to the console and start with "embers-init:".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/input.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOG_PREFIX "embers-init: "
#define LOG_BUF 4096
#include "embers-common.h"
#include "embers-users.h"

#define CONF_PATH "/embers/exec.conf"
#define NEWROOT "/newroot"
#define MAX_CONF (4 * 1024 * 1024)

/* ---------- exec.conf ---------- */

struct strlist {
	char **v;
	size_t n, cap;
};

static int strlist_push(struct strlist *l, char *s) {
	if (l->n + 2 > l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		char **v = realloc(l->v, cap * sizeof *v);
		if (!v) return -1;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = s;
	l->v[l->n] = NULL;
	return 0;
}

struct conf {
	int version;
	char *workdir;
	char *user;
	char *hostname;
	struct strlist argv;
	struct strlist env;
};

/* Unescapes in place: \\ -> \, \n -> LF, \r -> CR. Returns -1 on a bad escape. */
static int unescape(char *s) {
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r != '\\') {
			*w++ = *r;
			continue;
		}
		r++;
		if (*r == '\\') *w++ = '\\';
		else if (*r == 'n') *w++ = '\n';
		else if (*r == 'r') *w++ = '\r';
		else return -1;
	}
	*w = '\0';
	return 0;
}

static int read_conf(struct conf *c) {
	memset(c, 0, sizeof *c);
	int fd = open(CONF_PATH, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		logmsg("exec: cannot open %s: %s", CONF_PATH, strerror(errno));
		return -1;
	}
	char *buf = malloc(MAX_CONF + 1);
	if (!buf) {
		close(fd);
		logmsg("exec: out of memory");
		return -1;
	}
	size_t len = 0;
	for (;;) {
		ssize_t r = read(fd, buf + len, MAX_CONF - len);
		if (r < 0 && errno == EINTR) continue;
		if (r < 0) {
			logmsg("exec: cannot read %s: %s", CONF_PATH, strerror(errno));
			close(fd);
			return -1;
		}
		if (r == 0) break;
		len += (size_t)r;
		if (len == MAX_CONF) {
			logmsg("exec: %s is larger than %d bytes", CONF_PATH, MAX_CONF);
			close(fd);
			return -1;
		}
	}
	close(fd);
	buf[len] = '\0';
	if (memchr(buf, '\0', len)) {
		logmsg("exec: %s contains a NUL byte", CONF_PATH);
		return -1;
	}
	int lineno = 0;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		if (line[0] == '#' || line[0] == '\0') continue;
		char *eq = strchr(line, '=');
		if (!eq || eq == line) {
			logmsg("exec: %s: line %d is not key=value", CONF_PATH, lineno);
			return -1;
		}
		*eq = '\0';
		char *key = line, *val = eq + 1;
		if (unescape(val) < 0) {
			logmsg("exec: %s: bad escape in the value of %s", CONF_PATH, key);
			return -1;
		}
		int rc = 0;
		if (!strcmp(key, "version")) c->version = atoi(val);
		else if (!strcmp(key, "workdir")) c->workdir = val;
		else if (!strcmp(key, "user")) c->user = val;
		else if (!strcmp(key, "hostname")) c->hostname = val;
		else if (!strcmp(key, "arg")) rc = strlist_push(&c->argv, val);
		else if (!strcmp(key, "env")) rc = strlist_push(&c->env, val);
		/* unknown keys are ignored (forward compatibility) */
		if (rc < 0) {
			logmsg("exec: out of memory");
			return -1;
		}
	}
	if (c->version != 1) {
		logmsg("exec: %s has unsupported version %d (expected 1)", CONF_PATH, c->version);
		return -1;
	}
	if (c->argv.n == 0 || c->argv.v[0][0] == '\0') {
		logmsg("exec: %s gives no command", CONF_PATH);
		return -1;
	}
	if (!c->workdir || !c->workdir[0]) c->workdir = "/";
	if (!c->user) c->user = "";
	return 0;
}

/* ---------- environment and PATH lookup ---------- */

static const char *env_get(char **env, const char *key) {
	size_t k = strlen(key);
	for (char **e = env; e && *e; e++)
		if (strncmp(*e, key, k) == 0 && (*e)[k] == '=') return *e + k + 1;
	return NULL;
}

/* ---------- the function (child) ---------- */

static void run_function(struct conf *c) {
	/* stdin from /dev/null; stdout and stderr stay on the console */
	int nul = open("/dev/null", O_RDWR);
	if (nul >= 0) {
		dup2(nul, 0);
		if (nul > 2) close(nul);
	}
	setsid();
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);

	if (chroot(NEWROOT) < 0) {
		logmsg("exec: chroot %s: %s", NEWROOT, strerror(errno));
		_exit(125);
	}
	if (chdir("/") < 0) {
		logmsg("exec: chdir / after chroot: %s", strerror(errno));
		_exit(125);
	}
	struct cred cr;
	if (resolve_user(c->user, &cr) < 0) _exit(125);
	if (chdir(c->workdir) < 0) {
		logmsg("exec: working directory %s: %s", c->workdir, strerror(errno));
		_exit(125);
	}

	/* exactly the configured environment, plus PATH and HOME if not given */
	struct strlist env = {0};
	for (size_t i = 0; i < c->env.n; i++) strlist_push(&env, c->env.v[i]);
	char *extra;
	if (!env_get(env.v, "PATH") && strlist_push(&env, "PATH=" DEFAULT_PATH) < 0) _exit(125);
	if (!env_get(env.v, "HOME") && (asprintf(&extra, "HOME=%s", cr.home) < 0 || strlist_push(&env, extra) < 0)) _exit(125);
	if (!env.v) _exit(125);

	if (setgroups((size_t)cr.ngroups, cr.groups) < 0) {
		logmsg("exec: setgroups: %s", strerror(errno));
		_exit(125);
	}
	if (setgid(cr.gid) < 0) {
		logmsg("exec: setgid %u: %s", (unsigned)cr.gid, strerror(errno));
		_exit(125);
	}
	if (setuid(cr.uid) < 0) {
		logmsg("exec: setuid %u: %s", (unsigned)cr.uid, strerror(errno));
		_exit(125);
	}

	const char *arg0 = c->argv.v[0];
	char *prog;
	const char *path = env_get(env.v, "PATH");
	if (strchr(arg0, '/')) {
		prog = (char *)arg0;
	} else {
		prog = path_lookup(arg0, path);
		if (!prog) {
			int e = errno;
			logmsg("exec: %s: %s in PATH=%s", arg0, e == EACCES ? "not executable by this user" : "not found", path);
			_exit(e == EACCES ? 126 : 127);
		}
	}
	execve(prog, c->argv.v, env.v);
	int e = errno;
	struct stat st;
	if (e == ENOENT && stat(prog, &st) == 0)
		logmsg("exec: %s: %s (the file exists: its interpreter or dynamic loader is missing from the image?)", prog, strerror(e));
	else
		logmsg("exec: %s: %s", prog, strerror(e));
	_exit(e == ENOENT ? 127 : 126);
}

/* ---------- PID 1 ---------- */

static double uptime(void) {
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void reap_all(int timeout_ms) {
	for (int waited = 0;;) {
		pid_t p = waitpid(-1, NULL, WNOHANG);
		if (p > 0) continue;
		if (p < 0 && errno == ECHILD) return;
		if (waited >= timeout_ms) return;
		usleep(10000);
		waited += 10;
	}
}

static void shutdown_vm(void) {
	/* stop whatever the function left running, then make the disk consistent */
	if (kill(-1, SIGTERM) == 0) reap_all(1000);
	if (kill(-1, SIGKILL) == 0) reap_all(1000);
	sync();
	static const char *subs[] = {NEWROOT "/run", NEWROOT "/tmp", NEWROOT "/dev/shm", NEWROOT "/dev/pts", NEWROOT "/dev", NEWROOT "/sys", NEWROOT "/proc"};
	for (size_t i = 0; i < sizeof subs / sizeof *subs; i++) umount2(subs[i], MNT_DETACH);
	if (umount(NEWROOT) == 0) {
		logmsg("unmounted %s", NEWROOT);
	} else if (mount(NULL, NEWROOT, NULL, MS_REMOUNT | MS_RDONLY, NULL) == 0) {
		logmsg("remounted %s read-only", NEWROOT);
	} else {
		logmsg("warning: cannot unmount %s: %s", NEWROOT, strerror(errno));
	}
	sync();
	const char *mode = getenv("EMBERS_HALT");
	int reboot_first = mode && strcmp(mode, "reboot") == 0;
	logmsg("%s", reboot_first ? "rebooting" : "powering off");
	reboot(reboot_first ? RB_AUTOBOOT : RB_POWER_OFF);
	logmsg("warning: %s failed: %s", reboot_first ? "reboot" : "power off", strerror(errno));
	reboot(reboot_first ? RB_POWER_OFF : RB_AUTOBOOT);
	for (;;) pause();
}

/*
 * Open every input device that can report KEY_POWER: the ACPI power button (QEMU's
 * `system_powerdown`, with the Debian kernel's `button` and `evdev` modules).
 */
static int open_power_buttons(struct pollfd *pfds, int max) {
	int n = 0;
	for (int i = 0; i < 32 && n < max; i++) {
		char path[64];
		snprintf(path, sizeof path, "/dev/input/event%d", i);
		int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0) continue;
		unsigned long keys[KEY_MAX / (8 * sizeof(unsigned long)) + 1];
		memset(keys, 0, sizeof keys);
		if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof keys), keys) >= 0 &&
		    (keys[KEY_POWER / (8 * sizeof(unsigned long))] >> (KEY_POWER % (8 * sizeof(unsigned long)))) & 1UL) {
			pfds[n].fd = fd;
			pfds[n].events = POLLIN;
			n++;
		} else {
			close(fd);
		}
	}
	return n;
}

int main(void) {
	struct conf c;
	if (getpid() != 1) logmsg("warning: not PID 1 (pid %d)", (int)getpid());
	if (read_conf(&c) < 0) {
		logmsg("function not started: bad run configuration");
		shutdown_vm();
	}
	if (c.hostname && sethostname(c.hostname, strlen(c.hostname)) < 0)
		logmsg("warning: sethostname %s: %s", c.hostname, strerror(errno));

	/* Signals reach PID 1 through a signalfd: SIGCHLD to reap, SIGINT is ctrl-alt-del (a
	 * stop request, e.g. Firecracker's SendCtrlAltDel), the others are forwarded. */
	sigset_t mask;
	sigemptyset(&mask);
	int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(&mask, sigs[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	struct pollfd pfds[9];
	pfds[0].fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	pfds[0].events = POLLIN;
	if (pfds[0].fd < 0) logmsg("warning: signalfd: %s", strerror(errno));
	reboot(RB_DISABLE_CAD);
	int nfds = 1 + open_power_buttons(pfds + 1, 8);
	const char *st = getenv("EMBERS_STOP_TIMEOUT");
	long long stop_grace_ms = (st && atoi(st) > 0 ? atoi(st) : 10) * 1000LL;

	logmsg("exec %s (user \"%s\", workdir %s, %zu args, %zu env) at %.3fs", c.argv.v[0], c.user, c.workdir, c.argv.n, c.env.n, uptime());
	pid_t pid = fork();
	if (pid < 0) {
		logmsg("exec: fork: %s", strerror(errno));
		shutdown_vm();
	}
	if (pid == 0) {
		for (int i = 0; i < nfds; i++) close(pfds[i].fd);
		run_function(&c);
	}

	int status = 0, done = 0;
	long long kill_at = 0; /* when a stop was requested: SIGKILL deadline */
	while (!done) {
		int timeout = -1;
		if (kill_at) {
			long long left = kill_at - now_ms();
			timeout = left > 0 ? (int)left : 0;
		}
		int r = pfds[0].fd >= 0 ? poll(pfds, (nfds_t)nfds, timeout) : 0;
		if (pfds[0].fd < 0) {
			/* no signalfd: fall back to a plain blocking wait */
			pid_t p = waitpid(-1, &status, 0);
			if (p == pid || (p < 0 && errno == ECHILD)) done = 1;
			continue;
		}
		if (r < 0 && errno != EINTR) {
			logmsg("warning: poll: %s", strerror(errno));
			usleep(100000);
		}
		if (r > 0 && (pfds[0].revents & POLLIN)) {
			struct signalfd_siginfo si;
			while (read(pfds[0].fd, &si, sizeof si) == (ssize_t)sizeof si) {
				if (si.ssi_signo == SIGCHLD) continue;
				if (si.ssi_signo == SIGINT) {
					if (!kill_at) {
						logmsg("ctrl-alt-del: stopping the function (SIGTERM, SIGKILL after %llds)", stop_grace_ms / 1000);
						kill(-pid, SIGTERM);
						kill(pid, SIGTERM);
						kill_at = now_ms() + stop_grace_ms;
					}
				} else {
					kill(pid, (int)si.ssi_signo);
				}
			}
		}
		for (int i = 1; r > 0 && i < nfds; i++) {
			if (!(pfds[i].revents & POLLIN)) continue;
			struct input_event ev;
			while (read(pfds[i].fd, &ev, sizeof ev) == (ssize_t)sizeof ev) {
				if (ev.type == EV_KEY && ev.code == KEY_POWER && ev.value == 1 && !kill_at) {
					logmsg("power button: stopping the function (SIGTERM, SIGKILL after %llds)", stop_grace_ms / 1000);
					kill(-pid, SIGTERM);
					kill(pid, SIGTERM);
					kill_at = now_ms() + stop_grace_ms;
				}
			}
		}
		/* reap everything; note when the function itself exits */
		for (;;) {
			int ws;
			pid_t p = waitpid(-1, &ws, WNOHANG);
			if (p == pid) {
				status = ws;
				done = 1;
			}
			if (p <= 0) {
				if (p < 0 && errno == ECHILD) done = 1;
				break;
			}
		}
		if (!done && kill_at && now_ms() >= kill_at) {
			logmsg("the function did not stop in %llds: SIGKILL", stop_grace_ms / 1000);
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			kill_at = 0;
		}
	}
	if (WIFEXITED(status))
		logmsg("function exited: status=%d at %.3fs", WEXITSTATUS(status), uptime());
	else if (WIFSIGNALED(status))
		logmsg("function exited: signal=%d (%s) at %.3fs", WTERMSIG(status), strsignal(WTERMSIG(status)), uptime());
	else
		logmsg("function exited: unknown status 0x%x at %.3fs", status, uptime());
	shutdown_vm();
	return 0;
}
