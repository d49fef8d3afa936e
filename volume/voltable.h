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
};

extern const struct policing_table_ops voltable_ops;

#endif
