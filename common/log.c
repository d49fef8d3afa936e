/* log.c - sets up libqb's syslog and stderr targets for vsand.
 *
 * One level filter per target over every file ("*"), so libqb's own
 * messages (IPC, loop) follow the same level as ours. The priority is part
 * of each line so that an error stands out in a terminal or a journal.
 */
#include "common/log.h"

#include <qb/qbdefs.h>
#include <qb/qblog.h>
#include <syslog.h>

static int set_level(int target, int level)
{
    int r = qb_log_filter_ctl(target, QB_LOG_FILTER_CLEAR_ALL, QB_LOG_FILTER_FILE, "*", LOG_TRACE);

    if (r < 0)
        return r;
    return qb_log_filter_ctl(target, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", (uint8_t)level);
}

int log_open(const char *ident, int level, bool to_syslog)
{
    int r;

    qb_log_init(ident, LOG_DAEMON, (uint8_t)level);
    qb_log_format_set(QB_LOG_SYSLOG, "%p: %b");
    qb_log_format_set(QB_LOG_STDERR, "%t %N[%P]: %p: %b");
    r = qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_FALSE);
    if (r < 0)
        return r;
    if (!to_syslog)
        return qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
    return set_level(QB_LOG_SYSLOG, level);
}

int log_stderr(int level)
{
    int r;

    if (level < 0)
        return qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_FALSE);
    r = set_level(QB_LOG_STDERR, level);
    if (r < 0)
        return r;
    return qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_TRUE);
}

void log_close(void)
{
    qb_log_fini();
}
