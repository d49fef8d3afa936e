/* backup.h - `vsan backup`, `vsan restore` and `vsan volume clone`: a
 * snapshot read over NBD into an rbd diff v2 stream (rbddiff.h), a stream
 * written into a volume over NBD, and the two joined inside the CLI.
 *
 * Each takes the words after its command and returns an exit code
 * (admin_call.h); socket is vsand's admin socket, json asks for a JSON
 * summary instead of a line for people. */
#ifndef VSAN_CLI_BACKUP_H
#define VSAN_CLI_BACKUP_H

#include <stdbool.h>

int cli_backup(const char *socket, bool json, char **words, int n);
int cli_restore(const char *socket, bool json, char **words, int n);
int cli_clone(const char *socket, bool json, char **words, int n);

#endif
