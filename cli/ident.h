/* ident.h - `vsan quota set|list` and `vsan token create|list|revoke`
 * (ident.c). */
#ifndef VSAN_CLI_IDENT_H
#define VSAN_CLI_IDENT_H

#include <stdbool.h>

/* words: what follows `vsan quota` / `vsan token`; returns the exit code. */
int cli_quota(const char *socket, bool json, char **words, int n);
int cli_token(const char *socket, bool json, char **words, int n);

#endif
