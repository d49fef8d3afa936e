/* log.h - where vsand's qb_log() messages go: syslog and/or stderr.
 *
 * Everything logs with qb_log(LOG_..., ...) from <qb/qblog.h>; this module
 * only sets up libqb's two targets with one level filter. stderr is its own
 * switch because a daemon sends it first to its parent (which prints the
 * startup errors) and then to /dev/null.
 *
 * Called from the main thread only; qb_log() itself may be called from any.
 */
#ifndef VSAN_LOG_H
#define VSAN_LOG_H

#include <stdbool.h>

/* Starts logging as ident, to syslog if asked, messages up to level
 * (LOG_ERR .. LOG_DEBUG). stderr starts off. Returns 0 or -errno. */
int log_open(const char *ident, int level, bool to_syslog);

/* Sends messages up to level to stderr as well; a negative level turns
 * stderr off. Returns 0 or -errno. */
int log_stderr(int level);

/* Flushes and stops logging. */
void log_close(void);

#endif
