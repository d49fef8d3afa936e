/* messages.c - framing checks for the policing messages (messages.h). */
#include "policing/messages.h"

#include <string.h>

void pmsg_init(struct pmsg_header *h, enum pmsg_type type, size_t length)
{
    memset(h, 0, length);
    h->magic = PMSG_MAGIC;
    h->version = PMSG_VERSION;
    h->type = (uint16_t)type;
    h->length = (uint32_t)length;
}

static size_t fixed_length(int type)
{
    switch (type) {
    case PMSG_HELLO:
        return sizeof(struct pmsg_hello);
    case PMSG_REQUEST:
    case PMSG_RELEASE:
        return sizeof(struct pmsg_region);
    case PMSG_VOL_CREATE:
    case PMSG_VOL_DELETE:
        return sizeof(struct pmsg_volume);
    case PMSG_OFFER:
        return sizeof(struct pmsg_offer);
    case PMSG_REPLICA:
        return sizeof(struct pmsg_replica);
    case PMSG_SERVICE:
        return sizeof(struct pmsg_service);
    case PMSG_HEARTBEAT:
        return sizeof(struct pmsg_heartbeat);
    case PMSG_CUT_BEGIN:
        return sizeof(struct pmsg_cut_begin);
    case PMSG_CUT_DRAINED:
    case PMSG_CUT_ABORT:
        return sizeof(struct pmsg_cut);
    case PMSG_GRANT:
        return sizeof(struct pmsg_grant);
    case PMSG_QUOTA:
        return sizeof(struct pmsg_quota);
    case PMSG_TOKEN:
        return sizeof(struct pmsg_token);
    case PMSG_CAPACITY:
        return sizeof(struct pmsg_capacity);
    case PMSG_OUTDATE:
        return sizeof(struct pmsg_outdate);
    case PMSG_PROGRESS:
        return sizeof(struct pmsg_progress);
    default:
        return 0;
    }
}

static bool part_ok(const struct pmsg_state_part *p, size_t len)
{
    size_t data = len - sizeof *p;
    if (len <= sizeof *p || data > PMSG_PART_MAX || p->last > 1 || p->total > PMSG_STREAM_MAX)
        return false;
    /* Where this piece ends in the stream: every piece before it is full. */
    uint64_t end = (uint64_t)p->seq * PMSG_PART_MAX + data;
    if (p->last)
        return end == p->total;
    return data == PMSG_PART_MAX && end < p->total;
}

static bool lost_ok(const struct pmsg_lost *m, size_t len)
{
    return len >= sizeof *m && m->n <= PMSG_LOST_MAX &&
           len == sizeof *m + (size_t)m->n * sizeof(struct pmsg_lost_key);
}

int pmsg_check(const void *msg, size_t len, const char **why)
{
    const struct pmsg_header *h = msg;
    if (len < sizeof *h || h->magic != PMSG_MAGIC) {
        *why = "not a policing message";
        return -1;
    }
    if (h->version != PMSG_VERSION) {
        *why = "unknown protocol version";
        return -1;
    }
    if (h->length != len) {
        *why = "length field disagrees with the message";
        return -1;
    }
    if (h->type == PMSG_STATE_PART) {
        if (!part_ok(msg, len)) {
            *why = "malformed STATE_PART";
            return -1;
        }
        return h->type;
    }
    if (h->type == PMSG_LOST) {
        if (!lost_ok(msg, len)) {
            *why = "malformed LOST";
            return -1;
        }
        return h->type;
    }
    size_t want = fixed_length(h->type);
    if (want == 0) {
        *why = "unknown message type";
        return -1;
    }
    if (len != want) {
        *why = "wrong length for its type";
        return -1;
    }
    return h->type;
}

bool pmsg_set_string(char *field, size_t size, const char *s)
{
    size_t n = strlen(s);
    if (n >= size)
        return false;
    memset(field, 0, size);
    memcpy(field, s, n);
    return true;
}

bool pmsg_string_ok(const char *field, size_t size)
{
    return memchr(field, '\0', size) != NULL;
}
