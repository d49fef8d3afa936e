/* voltable.h - the replicated volume table's local side (voltable.c). */
#ifndef VSAN_VOLTABLE_H
#define VSAN_VOLTABLE_H

#include "policing/protocol.h"

struct mirror;
struct store;
struct volumes;

/* The ctx of voltable_ops. */
struct voltable {
    struct store *store;
    struct volumes *vols;
    struct mirror *mirror; /* NULL when standalone (set once it has started) */
    /* An identity's grant on a volume went or changed mode (main loop):
     * vsand ends its NBD connections to the volume and its snapshots. */
    void (*grant_ended)(void *arg, const char *volume, const char *identity);
    void *grant_ended_arg;
};

extern const struct policing_table_ops voltable_ops;

#endif
