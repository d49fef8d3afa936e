/* routes.c - the network API's resources and their admin requests (see
 * routes.h).
 *
 * A body must be one JSON object (strict JSON, nothing after it) with only
 * the fields its route takes: an unknown field is refused here, naming it,
 * rather than passed on, so "cmd" or "name" in a body can't change what
 * runs. Types and values are the admin command's to check, so an API
 * client gets the CLI's messages ("field "size" must be an integer").
 */
#include "api/routes.h"

#include "api/api.h"
#include "common/admin_proto.h"
#include "common/json_add.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "/api/v1"
#define VOLUMES PREFIX "/volumes"

struct api_route {
    const char *method;
    const char *path; /* the collection; named routes add "/NAME" */
    bool named;
    const char *cmd;
    const char *const *fields; /* of the body; NULL: takes none */
    unsigned ok_status;
    const char *select; /* the reply's member to return, NULL: the whole reply */
};

static const char *const create_fields[] = {"name", "size", "replicas", "nodes", NULL};
static const char *const resize_fields[] = {"size", "force", NULL};

static const struct api_route routes[] = {
    {"GET", VOLUMES, false, "volume.list", NULL, 200, NULL},
    {"POST", VOLUMES, false, "volume.create", create_fields, 201, NULL},
    {"GET", VOLUMES, true, "volume.show", NULL, 200, NULL},
    {"PATCH", VOLUMES, true, "volume.resize", resize_fields, 200, NULL},
    {"DELETE", VOLUMES, true, "volume.delete", NULL, 200, NULL},
    {"GET", PREFIX "/nodes", false, "status", NULL, 200, "cluster"},
    {"GET", PREFIX "/status", false, "status", NULL, 200, NULL},
    {"GET", PREFIX "/pool", false, "pool.status", NULL, 200, NULL},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

static const struct {
    const char *code;
    unsigned status;
} statuses[] = {
    {ADMIN_E_BAD_REQUEST, 400},
    {ADMIN_E_UNKNOWN_COMMAND, 400},
    {ADMIN_E_BAD_NAME, 400},
    {ADMIN_E_BAD_SIZE, 400},
    {ADMIN_E_BAD_IDENTITY, 400},
    {ADMIN_E_BAD_REPLICAS, 400},
    {ADMIN_E_NO_SUCH_NODE, 400}, /* a body naming a node is bad, the resource exists */
    {API_E_UNAUTHORIZED, 401},
    {ADMIN_E_FORBIDDEN, 403},
    {ADMIN_E_QUOTA_EXCEEDED, 403},
    {ADMIN_E_NO_SUCH_VOLUME, 404},
    {ADMIN_E_NO_SUCH_SNAPSHOT, 404},
    {ADMIN_E_NO_SUCH_GRANT, 404},
    {API_E_NOT_FOUND, 404},
    {API_E_METHOD_NOT_ALLOWED, 405},
    {ADMIN_E_VOLUME_EXISTS, 409},
    {ADMIN_E_VOLUME_IN_USE, 409},
    {ADMIN_E_SNAPSHOT_EXISTS, 409},
    {ADMIN_E_SNAPSHOT_BUSY, 409},
    {ADMIN_E_SNAPSHOT_LIMIT, 409},
    {ADMIN_E_TOO_MANY_VOLUMES, 409},
    {ADMIN_E_GRANT_LIMIT, 409},
    {ADMIN_E_BUSY, 409},
    {ADMIN_E_LIMIT, 409},
    {ADMIN_E_TOO_LARGE, 413},
    {ADMIN_E_NO_SPACE, 507}, /* Insufficient Storage: too few nodes have room */
    {ADMIN_E_NO_QUORUM, 503},
    {ADMIN_E_ABORTED, 503},
};

unsigned api_status(const char *code)
{
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (strcmp(statuses[i].code, code) == 0)
            return statuses[i].status;
    return 500;
}

/* Serialises o (taken) into out. */
static void set_body(struct api_http *out, unsigned status, struct json_object *o)
{
    static const char oom[] =
        "{\"code\":\"" ADMIN_E_SYSTEM "\",\"message\":\"vsand is out of memory\"}";
    size_t len = 0;
    const char *s = o ? json_object_to_json_string_length(
                            o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len)
                      : NULL;
    out->body = s ? strndup(s, len) : NULL;
    out->status = out->body ? status : 500;
    if (!out->body) {
        out->body = strdup(oom);
        len = out->body ? sizeof oom - 1 : 0;
    }
    out->len = len;
    json_object_put(o);
}

static void error_body(struct api_http *out, const char *code, const char *msg)
{
    struct json_object *o = json_object_new_object();
    if (o && (json_add(o, "code", json_object_new_string(code)) < 0 ||
              json_add(o, "message", json_object_new_string(msg)) < 0)) {
        json_object_put(o);
        o = NULL;
    }
    set_body(out, api_status(code), o);
}

void api_http_error(struct api_http *out, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    error_body(out, code, msg);
}

/* The NAME of a named route's url, or NULL if url is not one. */
static const char *name_of(const struct api_route *r, const char *url)
{
    size_t n = strlen(r->path);
    if (strncmp(url, r->path, n) != 0 || url[n] != '/' || !url[n + 1] || strchr(url + n + 1, '/'))
        return NULL;
    return url + n + 1;
}

static bool path_matches(const struct api_route *r, const char *url)
{
    return r->named ? name_of(r, url) != NULL : strcmp(url, r->path) == 0;
}

const struct api_route *api_route_find(const char *method, const char *url, struct api_http *out)
{
    bool path_known = false;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!path_matches(&routes[i], url))
            continue;
        if (strcmp(routes[i].method, method) == 0)
            return &routes[i];
        path_known = true;
    }
    if (!path_known) {
        api_http_error(out, API_E_NOT_FOUND, "no resource %s (see docs/openapi.yaml)", url);
        return NULL;
    }
    bool named = strncmp(url, VOLUMES "/", strlen(VOLUMES) + 1) == 0;
    out->allow = named ? "GET, PATCH, DELETE" : strcmp(url, VOLUMES) == 0 ? "GET, POST" : "GET";
    api_http_error(out, API_E_METHOD_NOT_ALLOWED, "%s %s: allowed methods are %s", method, url,
                   out->allow);
    return NULL;
}

static bool field_taken(const struct api_route *r, const char *key)
{
    for (const char *const *f = r->fields; *f; f++)
        if (strcmp(*f, key) == 0)
            return true;
    return false;
}

/* The body as a JSON object with only r's fields, or NULL with out set. */
static struct json_object *parse_body(const struct api_route *r, const char *url, const char *body,
                                      size_t len, struct api_http *out)
{
    struct json_tokener *tok = json_tokener_new();
    if (!tok) {
        api_http_error(out, ADMIN_E_SYSTEM, "out of memory");
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    const char *why = NULL;
    if (!o)
        why = e == json_tokener_continue ? "incomplete" : json_tokener_error_desc(e);
    else if (end + strspn(body + end, " \t\r\n") < len)
        why = "data after the JSON object";
    else if (!json_object_is_type(o, json_type_object))
        why = "not a JSON object";
    if (why) {
        api_http_error(out, ADMIN_E_BAD_REQUEST, "%s %s: body is not JSON: %s", r->method, url,
                       why);
        json_object_put(o);
        return NULL;
    }
    json_object_object_foreach(o, key, val)
    {
        (void)val;
        if (!field_taken(r, key)) {
            api_http_error(out, ADMIN_E_BAD_REQUEST, "%s %s: unknown field \"%s\"", r->method, url,
                           key);
            json_object_put(o);
            return NULL;
        }
    }
    return o;
}

int api_route_request(const struct api_route *r, const char *url, const char *body, size_t len,
                      char **request, size_t *reqlen, struct api_http *out)
{
    struct json_object *o;
    if (!r->fields && len > 0) {
        api_http_error(out, ADMIN_E_BAD_REQUEST, "%s %s takes no body", r->method, url);
        return -1;
    }
    if (r->fields) {
        o = parse_body(r, url, body, len, out);
        if (!o)
            return -1;
    } else if (!(o = json_object_new_object())) {
        api_http_error(out, ADMIN_E_SYSTEM, "out of memory");
        return -1;
    }
    if (json_add(o, "cmd", json_object_new_string(r->cmd)) < 0 ||
        (r->named && json_add(o, "name", json_object_new_string(name_of(r, url))) < 0)) {
        json_object_put(o);
        api_http_error(out, ADMIN_E_SYSTEM, "out of memory");
        return -1;
    }
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, reqlen);
    *request = s ? strndup(s, *reqlen) : NULL;
    json_object_put(o);
    if (!*request) {
        api_http_error(out, ADMIN_E_SYSTEM, "out of memory");
        return -1;
    }
    return 0;
}

void api_route_reply(const struct api_route *r, struct json_object *reply, struct api_http *out)
{
    struct json_object *ok, *v;
    if (!reply) {
        api_http_error(out, ADMIN_E_SYSTEM, "vsand is out of memory");
        return;
    }
    if (!json_object_object_get_ex(reply, "ok", &ok) || !json_object_get_boolean(ok)) {
        const char *code = json_object_get_string(json_object_object_get(reply, "error"));
        const char *msg = json_object_get_string(json_object_object_get(reply, "message"));
        error_body(out, code ? code : ADMIN_E_SYSTEM, msg ? msg : "no message");
        return;
    }
    json_object_object_del(reply, "ok");
    if (r->select && json_object_object_get_ex(reply, r->select, &v)) {
        set_body(out, r->ok_status, json_object_get(v));
        return;
    }
    set_body(out, r->ok_status, json_object_get(reply));
}
