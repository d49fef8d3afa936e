/* api_glue.h - starts vsand's network API ([api] in the config) on the
 * admin commands: each request runs through admin_execute() for its
 * caller, on the main loop, exactly as the admin socket's.
 */
#ifndef VSAN_API_GLUE_H
#define VSAN_API_GLUE_H

struct admin_node;
struct api;

/* Serves the API when [api] listen is set (else *out = NULL). 0, or
 * -errno with the reason logged (a credential file, the address). node
 * must outlive the api (api_stop). Main loop. */
int api_glue_start(const struct admin_node *node, struct api **out);

#endif
