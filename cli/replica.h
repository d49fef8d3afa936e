/* replica.h - `vsan replica add|remove|move` and `vsan node drain`
 * (replica.c). */
#ifndef VSAN_CLI_REPLICA_H
#define VSAN_CLI_REPLICA_H

#include <stdbool.h>

/* words: add VOL [NODE] | remove VOL NODE | move VOL FROM TO; returns the
 * exit code. */
int cli_replica(const char *socket, bool json, char **words, int n);
/* words: VOL --replicas N; returns the exit code. */
int cli_volume_set(const char *socket, bool json, char **words, int n);
/* words: drain NODE; returns the exit code. */
int cli_node(const char *socket, bool json, char **words, int n);

#endif
