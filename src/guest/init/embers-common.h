/*
 * What the guest's two static helpers share (embers-exec.c, PID 1, and embers-agent.c, the
 * host's agent): console logging, the PATH lookup and the monotonic clock. Header-only: each
 * helper stays one gcc call (src/guest/initramfs.ts compileExecHelper), with this file
 * beside its source.
 *
 * Before including it, define LOG_PREFIX (e.g. "embers-init: ") and LOG_BUF (the longest
 * line, in bytes). Needs _GNU_SOURCE (asprintf).
 */
#ifndef EMBERS_COMMON_H
#define EMBERS_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* One line to the console, prefixed with LOG_PREFIX, cut to LOG_BUF bytes. */
static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...) {
	char buf[LOG_BUF];
	int n = snprintf(buf, sizeof buf, LOG_PREFIX);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0) m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof buf - 2) len = sizeof buf - 2;
	buf[len++] = '\n';
	/* one write per line, so lines of different processes do not interleave */
	ssize_t w = write(2, buf, len);
	(void)w;
}

/* Finds an executable for `name` on `path`. Returns a malloc'd path, or NULL with errno set. */
static char *path_lookup(const char *name, const char *path) {
	int saw_eacces = 0;
	const char *p = path;
	for (;;) {
		const char *end = strchr(p, ':');
		size_t dlen = end ? (size_t)(end - p) : strlen(p);
		char *cand;
		if (asprintf(&cand, "%.*s%s%s", (int)dlen, dlen ? p : ".", "/", name) < 0) {
			errno = ENOMEM;
			return NULL;
		}
		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
			if (access(cand, X_OK) == 0) return cand;
			saw_eacces = 1;
		}
		free(cand);
		if (!end) break;
		p = end + 1;
	}
	errno = saw_eacces ? EACCES : ENOENT;
	return NULL;
}

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
