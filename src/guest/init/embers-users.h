/*
 * embers-exec's users and groups: resolves exec.conf's user spec against the function's own
 * /etc/passwd and /etc/group (parsed here, no NSS; the caller has chrooted into its root).
 * Header-only, included once by embers-exec.c after embers-common.h (logmsg), so the helper
 * stays one gcc call (src/guest/initramfs.ts compileExecHelper). Needs _GNU_SOURCE (getline).
 */
#ifndef EMBERS_USERS_H
#define EMBERS_USERS_H

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define MAX_GROUPS 256

static int parse_id(const char *s, unsigned long *out) {
	if (!*s) return -1;
	for (const char *p = s; *p; p++)
		if (*p < '0' || *p > '9') return -1;
	errno = 0;
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > 0xfffffffeUL) return -1;
	*out = v;
	return 0;
}

/* Splits a colon-separated line into at most n fields (in place). Returns the field count. */
static int split_colon(char *line, char **f, int n) {
	int i = 0;
	f[i++] = line;
	for (char *p = line; *p && i < n; p++) {
		if (*p == ':') {
			*p = '\0';
			f[i++] = p + 1;
		}
	}
	return i;
}

struct pwent {
	int found;
	char name[256];
	unsigned long uid, gid;
	char home[PATH_MAX];
};

/* Looks up by name (if name) or by uid in /etc/passwd. Returns 0 (found or not), -1 if the file cannot be read. */
static int lookup_passwd(const char *name, unsigned long uid, struct pwent *pw) {
	memset(pw, 0, sizeof *pw);
	FILE *f = fopen("/etc/passwd", "re");
	if (!f) return errno == ENOENT ? 0 : -1;
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) >= 0) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#' || line[0] == '+' || line[0] == '-') continue;
		char *fld[7];
		if (split_colon(line, fld, 7) < 7) continue;
		unsigned long u, g;
		if (parse_id(fld[2], &u) < 0 || parse_id(fld[3], &g) < 0) continue;
		if (name ? strcmp(fld[0], name) != 0 : u != uid) continue;
		pw->found = 1;
		snprintf(pw->name, sizeof pw->name, "%s", fld[0]);
		pw->uid = u;
		pw->gid = g;
		snprintf(pw->home, sizeof pw->home, "%s", fld[5][0] ? fld[5] : "/");
		break;
	}
	free(line);
	fclose(f);
	return 0;
}

/* Finds a group by name; returns 1 found, 0 not found, -1 unreadable. */
static int lookup_group(const char *name, unsigned long *gid) {
	FILE *f = fopen("/etc/group", "re");
	if (!f) return errno == ENOENT ? 0 : -1;
	char *line = NULL;
	size_t cap = 0;
	int found = 0;
	while (getline(&line, &cap, f) >= 0) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#' || line[0] == '+' || line[0] == '-') continue;
		char *fld[4];
		if (split_colon(line, fld, 4) < 3) continue;
		unsigned long g;
		if (parse_id(fld[2], &g) < 0) continue;
		if (strcmp(fld[0], name) == 0) {
			*gid = g;
			found = 1;
			break;
		}
	}
	free(line);
	fclose(f);
	return found;
}

/* Adds the gids of the groups that list `user` as a member. */
static void member_groups(const char *user, gid_t *groups, int *n) {
	FILE *f = fopen("/etc/group", "re");
	if (!f) return;
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) >= 0 && *n < MAX_GROUPS) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#' || line[0] == '+' || line[0] == '-') continue;
		char *fld[4];
		if (split_colon(line, fld, 4) < 4) continue;
		unsigned long g;
		if (parse_id(fld[2], &g) < 0) continue;
		char *save = NULL;
		for (char *m = strtok_r(fld[3], ",", &save); m; m = strtok_r(NULL, ",", &save)) {
			if (strcmp(m, user) == 0) {
				int dup = 0;
				for (int i = 0; i < *n; i++)
					if (groups[i] == (gid_t)g) dup = 1;
				if (!dup) groups[(*n)++] = (gid_t)g;
				break;
			}
		}
	}
	free(line);
	fclose(f);
}

struct cred {
	uid_t uid;
	gid_t gid;
	gid_t groups[MAX_GROUPS];
	int ngroups;
	char home[PATH_MAX];
};

/*
 * Resolves "", "name", "uid", "uid:gid", "name:group" (docker's rules): a name must exist
 * in /etc/passwd; a numeric uid need not (then gid 0 and HOME /); supplementary groups come
 * from /etc/group only when no group is given explicitly.
 */
static int resolve_user(const char *spec, struct cred *cr) {
	char userpart[512], grouppart[512];
	const char *colon = strchr(spec, ':');
	size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
	if (ulen >= sizeof userpart || (colon && strlen(colon + 1) >= sizeof grouppart)) {
		logmsg("exec: user \"%s\" is too long", spec);
		return -1;
	}
	memcpy(userpart, spec, ulen);
	userpart[ulen] = '\0';
	snprintf(grouppart, sizeof grouppart, "%s", colon ? colon + 1 : "");

	struct pwent pw;
	unsigned long id;
	int numeric = 0;
	if (userpart[0] == '\0') {
		id = 0;
		numeric = 1;
	} else if (parse_id(userpart, &id) == 0) {
		numeric = 1;
	}
	if (lookup_passwd(numeric ? NULL : userpart, numeric ? id : 0, &pw) < 0) {
		logmsg("exec: cannot read /etc/passwd of the function's root: %s", strerror(errno));
		return -1;
	}
	if (!numeric && !pw.found) {
		logmsg("exec: user \"%s\" not found in /etc/passwd of the function's root", userpart);
		return -1;
	}
	cr->uid = (uid_t)(numeric ? id : pw.uid);
	cr->gid = (gid_t)(pw.found ? pw.gid : 0);
	snprintf(cr->home, sizeof cr->home, "%s", pw.found ? pw.home : "/");

	if (grouppart[0]) {
		unsigned long g;
		if (parse_id(grouppart, &g) == 0) {
			cr->gid = (gid_t)g;
		} else {
			int r = lookup_group(grouppart, &g);
			if (r < 0) {
				logmsg("exec: cannot read /etc/group of the function's root: %s", strerror(errno));
				return -1;
			}
			if (r == 0) {
				logmsg("exec: group \"%s\" not found in /etc/group of the function's root", grouppart);
				return -1;
			}
			cr->gid = (gid_t)g;
		}
	}
	cr->groups[0] = cr->gid;
	cr->ngroups = 1;
	if (!grouppart[0] && pw.found) member_groups(pw.name, cr->groups, &cr->ngroups);
	return 0;
}

#endif
