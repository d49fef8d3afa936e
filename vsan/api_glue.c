/* api_glue.c - vsand's side of the network API (api/api.h): its requests
 * run as the admin socket's do, through admin_execute() on the main loop,
 * with the caller's identity (see api_glue.h).
 */
#include "vsan/api_glue.h"

#include "api/api.h"
#include "common/identity.h"
#include "vsan/admin.h"
#include "volume/tokens.h"
#include "vsan/config.h"

#include <errno.h>
#include <qb/qblog.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One API request on its way through the admin commands. */
struct glue_call {
    struct admin_call call;
    struct api_call *api;
};

static void answer(struct admin_call *call, struct json_object *reply)
{
    struct glue_call *g = (struct glue_call *)call;
    api_call_answer(g->api, reply);
    free(g);
}

/* The caller as the admin commands and the grants write identities: a
 * certificate's subject as "dn:DN", so that a volume it creates is granted
 * to that one certificate. */
static void execute(void *ctx, struct api_call *call, const struct api_caller *who,
                    const char *request, size_t len)
{
    const struct admin_node *node = ctx;
    char identity[IDENTITY_MAX + 1];
    struct glue_call *g = malloc(sizeof *g);
    if (!g) {
        api_call_answer(call, NULL);
        return;
    }
    *g = (struct glue_call){{answer}, call};
    snprintf(identity, sizeof identity, "%s%s", who->certificate ? IDENTITY_DN_PREFIX : "",
             who->identity);
    const struct admin_caller caller = {identity, who->admin};
    bool later = false;
    struct json_object *reply = admin_execute(node, &caller, request, len, &g->call, &later);
    if (!later)
        admin_call_reply(&g->call, reply);
}

/* The replicated table's tokens, safe from MHD's thread (volume/tokens.h). */
static int token_identity(void *ctx, const char *token, char *identity, size_t size)
{
    const struct admin_node *node = ctx;
    return tokens_identity(node->tokens, token, identity, size);
}

static const struct api_ops glue_ops = {.execute = execute, .token_identity = token_identity};

int api_glue_start(const struct admin_node *node, struct api **out)
{
    const struct vsan_config *cfg = node->cfg;
    /* api_start keeps the pointer: one API per process (api/creds.h). */
    static const char *admins[CONFIG_API_ADMINS_MAX];
    char err[1800];
    *out = NULL;
    if (!cfg->api_listen[0])
        return 0;
    for (unsigned i = 0; i < cfg->n_api_admins; i++)
        admins[i] = cfg->api_admins[i];
    struct api_params p = {
        .listen = cfg->api_listen,
        .certificates = cfg->tls_certificates,
        .admins = admins,
        .n_admins = cfg->n_api_admins,
        .connections = cfg->api_connections,
        .timeout_s = (cfg->api_timeout_ms + 999) / 1000,
        .loop = node->loop,
        .ops = &glue_ops,
        .ctx = (void *)node,
    };
    int r = api_start(&p, out, err, sizeof err);
    if (r < 0)
        qb_log(LOG_ERR, "api: %s", err);
    return r;
}
