/* rollback.h - `vsan snapshot rollback` (rollback.c). */
#ifndef VSAN_CLI_ROLLBACK_H
#define VSAN_CLI_ROLLBACK_H

#include <stdbool.h>

/* words: VOL SNAP [--progress]; returns the exit code. */
int cli_rollback(const char *socket, bool json, char **words, int n);

#endif
