/* access.h - `vsan access grant|revoke|list` (access.c). */
#ifndef VSAN_CLI_ACCESS_H
#define VSAN_CLI_ACCESS_H

#include <stdbool.h>

/* words: what follows `vsan access`; returns the exit code. */
int cli_access(const char *socket, bool json, char **words, int n);

#endif
