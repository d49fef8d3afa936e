/* json_add.h - the one json-c helper both the daemon and the CLI need. */
#ifndef VSAN_JSON_ADD_H
#define VSAN_JSON_ADD_H

#include <json-c/json.h>

/* Adds val to obj under key. On failure (val NULL included) drops val and
 * returns -1, so a chain of adds joined by || leaks nothing. */
static inline int json_add(struct json_object *obj, const char *key, struct json_object *val)
{
    if (!val)
        return -1;
    if (json_object_object_add(obj, key, val) < 0) {
        json_object_put(val);
        return -1;
    }
    return 0;
}

#endif
