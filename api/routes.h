/* routes.h - the resources of the network API (api.h): which admin
 * request an HTTP request stands for, and the HTTP reply an admin reply
 * becomes. Pure functions of their arguments, any thread.
 */
#ifndef VSAN_API_ROUTES_H
#define VSAN_API_ROUTES_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

struct api_route;

/* An HTTP reply: status and a JSON body (malloc'd, len bytes). */
struct api_http {
    unsigned status;
    char *body;
    size_t len;
    const char *allow; /* the Allow header of a 405, else NULL */
};

/* Finds the route of method on url (the path, unescaped, without its
 * query): its route, or NULL with *out set to 404 (no such resource) or
 * 405 (the resource, not with that method). */
const struct api_route *api_route_find(const char *method, const char *url, struct api_http *out);

/* The admin request for route with body (len bytes, NUL-terminated) as a
 * malloc'd string: 0, or -1 with *out set to the error (400: the body is
 * not a JSON object, has a field the route does not take, or is given
 * where none is taken; 500: out of memory). */
int api_route_request(const struct api_route *route, const char *url, const char *body, size_t len,
                      char **request, size_t *reqlen, struct api_http *out);

/* The HTTP reply to route's admin reply (NULL: out of memory): the
 * route's status and the reply without "ok" (or the member it selects),
 * or an error {"code", "message"} with api_status(code). */
void api_route_reply(const struct api_route *route, struct json_object *reply,
                     struct api_http *out);

/* An error reply {"code": code, "message": ...} with api_status(code). */
void api_http_error(struct api_http *out, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
