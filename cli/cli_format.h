/* cli_format.h - how the `vsan` CLI shows vsand's replies to people.
 *
 * Each function prints the data of one successful reply (see
 * admin_cmds.c for their fields) on stdout. Scripts use --json instead,
 * which prints the reply as it came; this output may change.
 */
#ifndef VSAN_CLI_FORMAT_H
#define VSAN_CLI_FORMAT_H

#include <json-c/json.h>

void cli_print_status(struct json_object *reply);
void cli_print_volume_list(struct json_object *reply);
void cli_print_volume(struct json_object *reply);
void cli_print_created(struct json_object *reply);
void cli_print_pool(struct json_object *reply);
void cli_print_resized(struct json_object *reply);
void cli_print_deleted(struct json_object *reply);
void cli_print_verified(struct json_object *reply);
void cli_print_replica_failed(struct json_object *reply);
void cli_print_replica_replaced(struct json_object *reply);
void cli_print_service_moved(struct json_object *reply);
void cli_print_snapshots_created(struct json_object *reply);
void cli_print_snapshot_list(struct json_object *reply);
void cli_print_snapshot_deleted(struct json_object *reply);

#endif
