/* Optional accelerator of collector.aggregator.Aggregator.feed (pure-Python fallback).
 *
 * It parses every line in C (value, type, @rate, |#tags, |T, the key-prefix split, set
 * members, gauge deltas) with exactly the grammar of protocol/lines.py, the reference,
 * and aggregates the good counter and value lines of known names into the buckets (and
 * the value sketches). Its entry points:
 *
 * feed(data, pos, now, max_age, max_len, known, buckets, capacity, sketches, gauges,
 *      alpha_bp, value_sketches, quiet) -> (pos, added, created, tagged, drops)
 *   Aggregates, from byte offset ``pos`` on, every line that is valid and whose head
 *   (the bytes before ":") is in ``known`` (a HeadTable, below: head -> (name, kind) of
 *   unkeyed names whose kind is fixed: the name cache) with a matching kind, into
 *   ``buckets`` (epoch second -> name -> [cnt, sum, mn, mx, kind]) and, unless
 *   ``sketches`` is None, a value sample also into ``sketches`` (minute -> name ->
 *   protocol._sketch.Sketch of ``alpha_bp``, weight 1/rate), through the capsule API of
 *   protocol/sketch_capi.h;
 *   a value bucket then holds its minute's sketch too, [cnt, sum, mn, mx, kind, sketch]. A
 *   |g line of a name known as a value is a value sample (gauges came later). It
 *   creates at most ``capacity`` new buckets and sketches together (what
 *   --max-pending-buckets leaves) and says how many it created, so Python keeps its
 *   pending count exact. It stops at the first line it does not aggregate (an unknown
 *   or keyed head, a set line, a kind conflict, a bad line, an overflow, the
 *   cap) and returns that line's offset: Python handles that line with the reference
 *   parser (which owns drop reasons, logging, caps, conflicts, gauges, sets and learning
 *   new heads), then calls back. ``pos == len(data)`` means done. ``tagged``:
 *   aggregated lines with |#tags (counted as tags_ignored). But a bad line whose reason r
 *   has bit r set in ``quiet`` (the caller logged a line of that reason within its
 *   interval, so this drop is only counted) is counted here and skipped: ``drops`` is
 *   None, or the count per reason (indexed as REASONS). Its reason is the whole
 *   parser's (names and keys checked), so counts are Python's.
 *
 * parse_lines(data, now, max_age, max_len) -> (samples, reasons, tagged)
 *   The whole parser, names and keys included, in the shape of LineParser.parse:
 *   samples as (name, kind, value, rate, timestamp, token, member, delta) and the
 *   reason of each bad line. Used by the differential tests
 *   (tests/test_fastfeed_differential.py), which hold it bit for bit against the
 *   Python parser.
 *
 * HeadTable()
 *   The name cache feed() reads: a mapping head (bytes) -> (name, kind) with len, in,
 *   [], get, pop, clear. Each entry owns the bucket of its name's latest second (its
 *   fields newer than the list's) until forget_buckets() (all of them: before anything
 *   reads or takes buckets) or release(name) (before Python adds to that name's).
 *
 * has_sketches() -> bool
 *   Whether protocol._sketch's capsule imports: without it feed() takes no sketches.
 *
 * recv_datagrams(fd, buffer, slot_size) -> (data, count, truncated)   (Linux only)
 *   One recvmmsg(2) call on the nonblocking UDP socket ``fd``: up to
 *   len(buffer) // slot_size datagrams (at most RECV_MAX_SLOTS), each into its slot of
 *   ``buffer``, returned joined, each followed by "\n". Feeding the join is feeding each
 *   datagram in turn: a line never spans datagrams, and feed skips empty lines.
 *   ``count`` datagrams were read, ``truncated`` of them longer than a slot (left out of
 *   ``data``: their last line would be cut). (b"", 0, 0) when none is waiting; OSError on
 *   any other error. Per datagram, asyncio's DatagramProtocol costs a callback, a bytes
 *   object, an address tuple and a feed call: ~3 us, most of the cost of a one-line
 *   datagram; this costs one of each per call.
 *
 * Memory safety: every read is bounded by the line's length (memchr and index checks;
 * a number is copied into a NUL-terminated buffer before it is converted), timestamps
 * have at most 12 digits (no signed overflow), and now/max_age are range-checked.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <limits.h>
#include <stddef.h>
#include <math.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/socket.h> /* recvmmsg: Python.h defines _GNU_SOURCE */
#endif

#include "../protocol/sketch_capi.h"

/* protocol.lines.FUTURE_TOLERANCE, protocol.buckets.RATE_FLOOR, names.MAX_NAME_LENGTH,
 * tokens.TOKEN_LENGTH: exported below and held equal to the Python constants by a test. */
#define FUTURE_TOLERANCE 300
#define RATE_FLOOR 1e-6
#define MAX_NAME_LENGTH 255
#define TOKEN_LENGTH 35
#define MAX_TS_DIGITS 12
#define MAX_MEMBER_LENGTH 255 /* protocol.lines.MAX_MEMBER_LENGTH */

enum reason {
    GF_OK = 0,
    GF_PARSE_ERROR,
    GF_BAD_NAME,
    GF_BAD_VALUE,
    GF_UNKNOWN_TYPE,
    GF_BAD_RATE,
    GF_BAD_TIMESTAMP,
    GF_TOO_LONG,
    GF_BAD_KEY,
    GF_COUNT
};
/* the values of protocol.lines.Reason */
static const char *const reason_names[GF_COUNT] = {
    NULL,       "parse_error",   "bad_name", "bad_value", "unknown_type",
    "bad_rate", "bad_timestamp", "too_long", "bad_key",
};

/* protocol.names kinds; the index of kind_objects */
enum kind { KIND_COUNTER = 0, KIND_VALUE = 1, KIND_GAUGE = 2, KIND_SET = 3, KIND_COUNT };

typedef struct {
    long long now, oldest, newest; /* the |T window */
    Py_ssize_t max_len;
} limits;

typedef struct {
    const char *head;
    Py_ssize_t head_len;
    int kind;
    double value, rate;
    int has_ts;
    long long ts;
    int tagged;
    int delta;          /* a gauge with an explicit sign: +n|g, -n|g */
    const char *member; /* a set's member (kind set), member_len bytes */
    Py_ssize_t member_len;
} parsed_line;

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }

static inline int is_base62(char c) {
    return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline int is_name_char(char c) { return is_base62(c) || c == '_' || c == '-'; }

/* protocol.names: dot-separated segments of [A-Za-z0-9_-], at most 255 bytes. */
static int valid_name(const char *p, Py_ssize_t n) {
    if (n < 1 || n > MAX_NAME_LENGTH) return 0;
    int after_dot = 1; /* a leading "." is as bad as ".." */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] == '.') {
            if (after_dot) return 0;
            after_dot = 1;
        } else if (is_name_char(p[i])) {
            after_dot = 0;
        } else {
            return 0;
        }
    }
    return !after_dot;
}

/* True if p[0:n] starts like a token: "gf_" + 32 base62 (protocol.lines._split_head). */
static int token_shaped(const char *p, Py_ssize_t n) {
    if (n < TOKEN_LENGTH || p[0] != 'g' || p[1] != 'f' || p[2] != '_') return 0;
    for (Py_ssize_t i = 3; i < TOKEN_LENGTH; i++)
        if (!is_base62(p[i])) return 0;
    return 1;
}

/* protocol.tokens.contains_token: a token-shaped run ("gf_" + 32 base62) anywhere in
 * the name. A key must never become part of a name every read key can list. */
static int contains_token(const char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i + TOKEN_LENGTH <= n; i++)
        if (p[i] == 'g' && token_shaped(p + i, n - i)) return 1;
    return 0;
}

/* protocol.lines.NUMBER, fully matched:
 * [+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?  (ASCII digits only). */
static int is_number(const char *p, Py_ssize_t n) {
    Py_ssize_t i = 0, int_digits = 0, frac_digits = 0;
    if (i < n && (p[i] == '+' || p[i] == '-')) i++;
    while (i < n && is_digit(p[i])) i++, int_digits++;
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && is_digit(p[i])) i++, frac_digits++;
    }
    if (int_digits == 0 && frac_digits == 0) return 0;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) i++;
        Py_ssize_t exp_digits = 0;
        while (i < n && is_digit(p[i])) i++, exp_digits++;
        if (exp_digits == 0) return 0;
    }
    return i == n;
}

static const double exact_powers[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* float() of a string that is_number accepted: correctly rounded, as Python's.
 * Fast path (Clinger): a mantissa of at most 2^53 and a power of ten of at most 22 are
 * both exact doubles, so one multiplication or division rounds correctly. Anything
 * else goes to PyOS_string_to_double, the very conversion float() uses (David Gay's
 * correctly rounded strtod, locale-independent). Returns 0, or -1 with an exception. */
static int to_double(const char *p, Py_ssize_t n, double *out) {
    Py_ssize_t i = 0;
    int negative = 0;
    if (p[i] == '+' || p[i] == '-') negative = p[i++] == '-';
    uint64_t mantissa = 0;
    int digits = 0; /* significant digits in mantissa */
    long scale = 0; /* decimal exponent from the fraction */
    int exact = 1;
    for (; i < n && is_digit(p[i]); i++) {
        if (mantissa == 0 && p[i] == '0') continue;
        if (++digits > 19) exact = 0;
        else mantissa = mantissa * 10 + (uint64_t)(p[i] - '0');
    }
    if (i < n && p[i] == '.') {
        for (i++; i < n && is_digit(p[i]); i++) {
            scale--;
            if (mantissa == 0 && p[i] == '0') continue;
            if (++digits > 19) exact = 0;
            else mantissa = mantissa * 10 + (uint64_t)(p[i] - '0');
        }
    }
    long exponent = 0;
    if (i < n) { /* [eE][+-]?[0-9]+ */
        i++;
        int exp_negative = 0;
        if (p[i] == '+' || p[i] == '-') exp_negative = p[i++] == '-';
        for (; i < n; i++) {
            if (exponent < 100000) exponent = exponent * 10 + (p[i] - '0');
            else exact = 0; /* huge: the slow path knows it is inf or 0 */
        }
        if (exp_negative) exponent = -exponent;
    }
    if (exact && mantissa == 0) {
        *out = negative ? -0.0 : 0.0;
        return 0;
    }
    long power = exponent + scale;
#if FLT_EVAL_METHOD != 0 /* extended precision would round twice: slow path only */
    exact = 0;
#endif
    if (exact && mantissa <= ((uint64_t)1 << 53) && power >= -22 && power <= 22) {
        double m = (double)mantissa;
        double v = power >= 0 ? m * exact_powers[power] : m / exact_powers[-power];
        *out = negative ? -v : v;
        return 0;
    }
    char small[128];
    char *copy = n < (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)n + 1);
    if (!copy) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, p, (size_t)n);
    copy[n] = '\0';
    char *end = NULL;
    double v = PyOS_string_to_double(copy, &end, NULL); /* inf on overflow, no error */
    int failed = (v == -1.0 && PyErr_Occurred()) || end != copy + n;
    if (copy != small) PyMem_Free(copy);
    if (failed) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_SystemError, "to_double: not a number");
        return -1;
    }
    *out = v;
    return 0;
}

static int all_digits(const char *p, Py_ssize_t n) {
    if (n == 0) return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!is_digit(p[i])) return 0;
    return 1;
}

/* One line (no "\n"; its trailing "\r" already removed; not empty), checked in the
 * order of LineParser.parse so a line with several faults gets the same reason.
 * check_head: validate the name and key prefix (parse_lines); feed() instead looks the
 * head up in its cache of good heads. Returns a reason (GF_OK: *out is the sample), or
 * -1 with a Python exception (out of memory only). */
static int parse_line(const char *p, Py_ssize_t len, const limits *lim, int check_head,
                      parsed_line *out) {
    if (len > lim->max_len) return GF_TOO_LONG;
    const char *colon = memchr(p, ':', (size_t)len);
    if (!colon) return GF_PARSE_ERROR;
    const char *end = p + len;
    const char *value = colon + 1;
    const char *bar = memchr(value, '|', (size_t)(end - value));
    if (!bar) return GF_PARSE_ERROR; /* fewer than two |fields */
    Py_ssize_t value_len = bar - value;
    const char *type = bar + 1;
    const char *type_end = memchr(type, '|', (size_t)(end - type));
    if (!type_end) type_end = end;
    Py_ssize_t type_len = type_end - type;
    if (type_len == 1 && type[0] == 'c') out->kind = KIND_COUNTER;
    else if (type_len == 1 && (type[0] == 'v' || type[0] == 'h' || type[0] == 'd'))
        out->kind = KIND_VALUE;
    else if (type_len == 2 && type[0] == 'm' && type[1] == 's') out->kind = KIND_VALUE;
    else if (type_len == 1 && type[0] == 'g') out->kind = KIND_GAUGE;
    else if (type_len == 1 && type[0] == 's') out->kind = KIND_SET;
    else return GF_UNKNOWN_TYPE;

    out->head = p;
    out->head_len = colon - p;
    if (check_head) {
        const char *name = p;
        Py_ssize_t name_len = out->head_len;
        if (token_shaped(p, name_len)) {
            if (name_len == TOKEN_LENGTH || p[TOKEN_LENGTH] != '.') return GF_BAD_KEY;
            name += TOKEN_LENGTH + 1;
            name_len -= TOKEN_LENGTH + 1;
        }
        if (!valid_name(name, name_len)) return GF_BAD_NAME;
        if (contains_token(name, name_len)) return GF_BAD_KEY;
    }

    out->delta = 0;
    out->member = NULL;
    out->member_len = 0;
    if (out->kind == KIND_SET) {
        /* a member: 1..255 bytes of printable ASCII (str.isprintable on ASCII) */
        if (value_len < 1 || value_len > MAX_MEMBER_LENGTH) return GF_BAD_VALUE;
        for (Py_ssize_t i = 0; i < value_len; i++)
            if ((unsigned char)value[i] < 0x20 || (unsigned char)value[i] > 0x7e)
                return GF_BAD_VALUE;
        out->member = value;
        out->member_len = value_len;
        out->value = 1.0;
    } else {
        if (!all_digits(value, value_len)) {
            if (!is_number(value, value_len)) return GF_BAD_VALUE;
            out->delta = out->kind == KIND_GAUGE && (value[0] == '+' || value[0] == '-');
        }
        if (to_double(value, value_len, &out->value) < 0) return -1;
        if (!isfinite(out->value)) return GF_BAD_VALUE;
    }

    out->rate = 1.0;
    out->has_ts = 0;
    out->ts = 0;
    out->tagged = 0;
    for (const char *field = type_end; field < end;) {
        field++; /* past "|" */
        const char *field_end = memchr(field, '|', (size_t)(end - field));
        if (!field_end) field_end = end;
        Py_ssize_t n = field_end - field;
        if (n >= 1 && field[0] == '@') {
            if (!is_number(field + 1, n - 1)) return GF_BAD_RATE;
            if (to_double(field + 1, n - 1, &out->rate) < 0) return -1;
            if (!(RATE_FLOOR <= out->rate && out->rate <= 1.0)) return GF_BAD_RATE;
        } else if (n >= 1 && field[0] == '#') {
            out->tagged = 1;
        } else if (n >= 1 && field[0] == 'T') {
            if (!all_digits(field + 1, n - 1) || n - 1 > MAX_TS_DIGITS) return GF_BAD_TIMESTAMP;
            long long ts = 0; /* at most 12 digits: no overflow */
            for (Py_ssize_t i = 1; i < n; i++) ts = ts * 10 + (field[i] - '0');
            out->has_ts = 1;
            out->ts = ts;
            if (!(lim->oldest <= ts && ts <= lim->newest)) return GF_BAD_TIMESTAMP;
        } else if (n >= 2 && (field[0] == 'c' || field[0] == 'e') && field[1] == ':') {
            /* DogStatsD origin detection (container id, external data) */
        } else {
            return GF_PARSE_ERROR;
        }
        field = field_end;
    }
    return GF_OK;
}

/* now and max_age as C integers small enough that the window cannot overflow. */
static int read_limits(PyObject *now_obj, PyObject *max_age_obj, PyObject *max_len_obj,
                       limits *lim) {
    long long now = PyLong_AsLongLong(now_obj);
    long long max_age = PyLong_AsLongLong(max_age_obj);
    lim->max_len = PyLong_AsSsize_t(max_len_obj);
    if (PyErr_Occurred()) return -1;
    const long long bound = (long long)1 << 62;
    if (now < -bound || now > bound || max_age < -bound || max_age > bound) {
        PyErr_SetString(PyExc_OverflowError, "now or max_age out of range");
        return -1;
    }
    lim->now = now;
    lim->oldest = now - max_age;
    lim->newest = now + FUTURE_TOLERANCE;
    return 0;
}

static PyObject *kind_objects[KIND_COUNT]; /* "counter", "value", ...: interned at import */

/* protocol._sketch's C API, imported on first use (not at our import: no import
 * order between the two extensions). NULL if it cannot be imported: then Python never
 * asks feed() for sketches (Aggregator falls back to its own loop). */
static GfSketchCAPI *sketch_api;
static int sketch_api_tried;

static GfSketchCAPI *get_sketch_api(void) {
    if (!sketch_api_tried) {
        sketch_api_tried = 1;
        /* PyCapsule_Import finds a submodule as an attribute of its package (3.11):
         * only once the submodule is imported. */
        PyObject *module = PyImport_ImportModule("protocol._sketch");
        if (module) {
            Py_DECREF(module);
            sketch_api = (GfSketchCAPI *)PyCapsule_Import(GF_SKETCH_CAPSULE, 0);
        }
        if (!sketch_api) PyErr_Clear();
    }
    return sketch_api;
}

/* ``*slot`` (a float of a bucket list) set to ``x``. A float only the list holds is
 * changed in place: no other reference can see it change, and a bucket given back by
 * its entry skips an allocation and a free per field. Floats are not cached or shared by
 * CPython (a new bucket's min and max are one object: two references, so replaced). */
static int set_float(PyObject **slot, double x) {
    PyObject *old = *slot;
    if (Py_REFCNT(old) == 1 && PyFloat_CheckExact(old)) {
        ((PyFloatObject *)old)->ob_fval = x;
        return 0;
    }
    PyObject *fresh = PyFloat_FromDouble(x);
    if (!fresh) return -1;
    *slot = fresh;
    Py_DECREF(old);
    return 0;
}

/* HeadTable: the name cache of the C pass (Aggregator._known when the C pass runs), a
 * hash table of line head (bytes) -> (name, kind), keyed by the head's bytes so a line
 * is looked up without making a bytes object. With 10,000 names the dict it replaces
 * cost a line three cache misses (index, entry, key) before the second's table cost
 * three more (the name's hash, index, entry), and the bucket (a list, four floats) as
 * many again: a perf profile put dict lookups at 34% of the daemon and most of feed's
 * own time in the buckets (docs/performance.md).
 *
 * So an entry also owns the bucket of its name's latest second: the bucket's count,
 * sum, min and max live in the entry (with the sketch's address) and the list's floats
 * are older, until the entry gives the bucket up (entry_release: the fields go back
 * into the list). A line of a name whose bucket its entry owns touches the index slot
 * and the entry's first cache line, nothing else (the sketch: later, in add_many).
 * Adding in the same order to the same doubles, the fields are bit for bit what the
 * list would hold.
 *
 * Nothing but feed may read or change an owned bucket, so Aggregator gives buckets up
 * before anything else looks: forget_buckets() (all of them) before take(), before
 * dropping a kind's buckets, and wherever Python reads Aggregator.buckets;
 * release(name) before Python's add() of that name (the unkeyed head is the name's
 * bytes); an entry changed or removed gives its bucket up first. An owned bucket is
 * always buckets[ts][name] (only take() and _drop_pending remove buckets), held by a
 * strong reference all the same.
 *
 * The layout is CPython's compact dict: an index of slots (int32, open addressing,
 * CPython's perturbed probe) into a dense array of entries. Hashes are Python's own
 * (siphash13 of the bytes, seeded per process): a flood of colliding heads cannot be
 * built offline. No GC support: it holds bytes, str and bucket lists, and none of those
 * can refer back to it. */
#define SLOT_EMPTY (-1)
#define SLOT_DELETED (-2)

/* An entry is three cache lines. The first holds what a line of a known name reads
 * and writes: the hash, and the fields of the bucket the entry owns. The others hold
 * the head's first INLINE_HEAD bytes, so comparing a head reads no bytes object (that
 * read was the costliest miss of a lookup), and the objects. */
#define INLINE_HEAD 96

typedef struct {
    Py_hash_t hash;
    int head_len;
    int kind_index;        /* kind's index in kind_objects (equal, not only identical), or -1 */
    long long ts;          /* the second of ``bucket`` */
    double cnt, sum, mn, mx; /* the owned bucket's fields: newer than its list's floats */
    PyObject *sketch;      /* the owned bucket's sketch (its item 5, borrowed), or NULL */
    PyObject *bucket;      /* the bucket list this entry owns, or NULL */
    PyObject *head;        /* bytes; NULL for an entry popped since the last rebuild */
    PyObject *name;        /* str */
    PyObject *kind;        /* str, as given */
    char inline_head[INLINE_HEAD]; /* the head's first bytes */
} head_entry;

typedef struct {
    PyObject_HEAD
    int32_t *index;         /* mask + 1 slots: an entry's position, or SLOT_* */
    size_t mask;
    head_entry *entries;
    Py_ssize_t used;        /* entries[0:used] (popped ones included) */
    Py_ssize_t allocated;   /* room in entries */
    Py_ssize_t live;        /* entries with a head: len() */
} HeadTable;

_Static_assert(sizeof(head_entry) == 192, "a head entry is three cache lines");
_Static_assert(offsetof(head_entry, bucket) == 64, "a line's fields in the first line");

static PyTypeObject HeadTable_Type;

#define MAX_HEADS ((Py_ssize_t)1 << 28) /* int32 positions, with room to spare */

/* Give up the bucket the entry owns: its fields back into the list's floats. -1 (with
 * MemoryError: a float could not be made) leaves the list with its older fields. */
static int entry_release(head_entry *e) {
    if (!e->bucket) return 0;
    PyObject **items = ((PyListObject *)e->bucket)->ob_item;
    int failed = set_float(&items[0], e->cnt) < 0 || set_float(&items[1], e->sum) < 0 ||
                 set_float(&items[2], e->mn) < 0 || set_float(&items[3], e->mx) < 0;
    Py_CLEAR(e->bucket);
    e->sketch = NULL;
    return failed ? -1 : 0;
}

/* Own ``bucket``, buckets[ts][name], a list of five (six: ``sketched``) whose first four
 * items the caller checked are floats, giving up the one owned before. */
static int entry_own(head_entry *e, PyObject *bucket, long long ts, int sketched) {
    if (entry_release(e) < 0) return -1;
    PyObject **items = ((PyListObject *)bucket)->ob_item;
    e->cnt = PyFloat_AS_DOUBLE(items[0]);
    e->sum = PyFloat_AS_DOUBLE(items[1]);
    e->mn = PyFloat_AS_DOUBLE(items[2]);
    e->mx = PyFloat_AS_DOUBLE(items[3]);
    e->sketch = sketched ? items[5] : NULL;
    e->bucket = Py_NewRef(bucket);
    e->ts = ts;
    return 0;
}

static int entry_clear(head_entry *e) {
    int failed = entry_release(e);
    Py_CLEAR(e->head);
    Py_CLEAR(e->name);
    Py_CLEAR(e->kind);
    return failed;
}

static inline int head_equal(const head_entry *e, const char *p, Py_ssize_t len) {
    if (len <= INLINE_HEAD) return memcmp(e->inline_head, p, (size_t)len) == 0;
    return memcmp(e->inline_head, p, INLINE_HEAD) == 0 &&
           memcmp(PyBytes_AS_STRING(e->head) + INLINE_HEAD, p + INLINE_HEAD,
                  (size_t)(len - INLINE_HEAD)) == 0;
}

static head_entry *head_find(HeadTable *t, Py_hash_t hash, const char *p, Py_ssize_t len,
                             size_t *slot_out) {
    size_t perturb = (size_t)hash, i = (size_t)hash & t->mask;
    for (;;) {
        int32_t ix = t->index[i];
        if (ix == SLOT_EMPTY) {
            if (slot_out) *slot_out = i;
            return NULL;
        }
        if (ix >= 0) {
            head_entry *e = &t->entries[ix];
            if (e->hash == hash && (Py_ssize_t)e->head_len == len && head_equal(e, p, len)) {
                if (slot_out) *slot_out = i;
                return e;
            }
        }
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & t->mask;
    }
}

/* Rebuild for at least ``need`` live entries: compact the entries (dropping popped
 * ones), size the index to at most 2/3 full, and reinsert. */
static int head_rebuild(HeadTable *t, Py_ssize_t need) {
    size_t slots = 8;
    while (slots * 2 < (size_t)need * 3 + 3) slots *= 2;
    Py_ssize_t room = need < 8 ? 8 : need;
    int32_t *index = PyMem_Malloc(slots * sizeof(int32_t));
    /* aligned: an entry is then exactly three cache lines */
    head_entry *entries = aligned_alloc(64, (size_t)room * sizeof(head_entry));
    if (!index || !entries) {
        PyMem_Free(index);
        free(entries);
        PyErr_NoMemory();
        return -1;
    }
    memset(index, 0xff, slots * sizeof(int32_t)); /* SLOT_EMPTY */
    Py_ssize_t n = 0;
    for (Py_ssize_t k = 0; k < t->used; k++) {
        head_entry *e = &t->entries[k];
        if (!e->head) continue;
        entries[n] = *e;
        size_t perturb = (size_t)e->hash, i = (size_t)e->hash & (slots - 1);
        while (index[i] != SLOT_EMPTY) {
            perturb >>= 5;
            i = (i * 5 + perturb + 1) & (slots - 1);
        }
        index[i] = (int32_t)n++;
    }
    PyMem_Free(t->index);
    free(t->entries);
    t->index = index;
    t->mask = slots - 1;
    t->entries = entries;
    t->used = n;
    t->allocated = room;
    return 0;
}

static PyObject *HeadTable_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "HeadTable() takes no arguments");
        return NULL;
    }
    HeadTable *t = (HeadTable *)type->tp_alloc(type, 0);
    if (!t) return NULL;
    if (head_rebuild(t, 0) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static int head_clear_all(HeadTable *t) {
    int failed = 0;
    for (Py_ssize_t k = 0; k < t->used; k++) failed |= entry_clear(&t->entries[k]) < 0;
    t->used = t->live = 0;
    if (t->index) memset(t->index, 0xff, (t->mask + 1) * sizeof(int32_t));
    return failed ? -1 : 0;
}

static void HeadTable_dealloc(HeadTable *t) {
    if (head_clear_all(t) < 0) PyErr_Clear(); /* the lists' older fields: nothing else to do */
    PyMem_Free(t->index);
    free(t->entries);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* The head's bytes and hash, or -1 with TypeError. */
static int head_key(PyObject *head, Py_hash_t *hash) {
    if (!PyBytes_CheckExact(head)) {
        PyErr_SetString(PyExc_TypeError, "HeadTable keys are bytes");
        return -1;
    }
    *hash = PyObject_Hash(head); /* the bytes' own hash: the one feed computes */
    return *hash == -1 ? -1 : 0;
}

static int head_set(HeadTable *t, PyObject *head, PyObject *value) {
    Py_hash_t hash;
    if (head_key(head, &hash) < 0) return -1;
    size_t slot;
    head_entry *e = head_find(t, hash, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), &slot);
    if (!value) { /* del table[head] */
        if (!e) {
            PyErr_SetObject(PyExc_KeyError, head);
            return -1;
        }
        t->index[slot] = SLOT_DELETED;
        t->live--;
        return entry_clear(e);
    }
    if (!PyTuple_CheckExact(value) || PyTuple_GET_SIZE(value) != 2 ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(value, 0)) ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(value, 1))) {
        PyErr_SetString(PyExc_TypeError, "HeadTable values are (name, kind) str pairs");
        return -1;
    }
    PyObject *name = PyTuple_GET_ITEM(value, 0), *kind = PyTuple_GET_ITEM(value, 1);
    int kind_index = -1;
    for (int k = 0; k < KIND_COUNT && kind_index < 0; k++) {
        int same = PyUnicode_Compare(kind, kind_objects[k]);
        if (same == -1 && PyErr_Occurred()) return -1;
        if (same == 0) kind_index = k;
    }
    if (!e) {
        if (PyBytes_GET_SIZE(head) > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "HeadTable: a head longer than INT_MAX");
            return -1;
        }
        if (t->live >= MAX_HEADS) {
            PyErr_SetString(PyExc_OverflowError, "HeadTable is full");
            return -1;
        }
        /* grow (or only compact) when the entries or the index would be too full */
        if (t->used == t->allocated || (size_t)(t->used + 1) * 3 > (t->mask + 1) * 2) {
            if (head_rebuild(t, t->live + 1 > t->live * 2 ? t->live + 1 : t->live * 2) < 0)
                return -1;
            head_find(t, hash, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), &slot);
        }
        e = &t->entries[t->used];
        memset(e, 0, sizeof *e);
        e->hash = hash;
        e->head = Py_NewRef(head);
        e->head_len = (int)PyBytes_GET_SIZE(head);
        memcpy(e->inline_head, PyBytes_AS_STRING(head),
               (size_t)(e->head_len < INLINE_HEAD ? e->head_len : INLINE_HEAD));
        t->index[slot] = (int32_t)t->used++;
        t->live++;
    }
    if (entry_release(e) < 0) return -1; /* another name's bucket is never this one's */
    Py_XSETREF(e->name, Py_NewRef(name));
    Py_XSETREF(e->kind, Py_NewRef(kind));
    e->kind_index = kind_index;
    return 0;
}

static head_entry *head_get(HeadTable *t, PyObject *head) {
    Py_hash_t hash;
    if (head_key(head, &hash) < 0) return NULL;
    return head_find(t, hash, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), NULL);
}

static PyObject *entry_value(const head_entry *e) { return PyTuple_Pack(2, e->name, e->kind); }

static Py_ssize_t HeadTable_len(HeadTable *t) { return t->live; }

static PyObject *HeadTable_subscript(HeadTable *t, PyObject *head) {
    head_entry *e = head_get(t, head);
    if (e) return entry_value(e);
    if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, head);
    return NULL;
}

static int HeadTable_ass_subscript(HeadTable *t, PyObject *head, PyObject *value) {
    return head_set(t, head, value);
}

static int HeadTable_contains(HeadTable *t, PyObject *head) {
    head_entry *e = head_get(t, head);
    return e ? 1 : PyErr_Occurred() ? -1 : 0;
}

static PyObject *HeadTable_get(HeadTable *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(head, default=None)");
        return NULL;
    }
    head_entry *e = head_get(t, args[0]);
    if (e) return entry_value(e);
    if (PyErr_Occurred()) return NULL;
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *HeadTable_pop(HeadTable *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(head[, default])");
        return NULL;
    }
    head_entry *e = head_get(t, args[0]);
    if (!e) {
        if (PyErr_Occurred()) return NULL;
        if (nargs == 2) return Py_NewRef(args[1]);
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    PyObject *value = entry_value(e);
    if (!value || head_set(t, args[0], NULL) < 0) {
        Py_XDECREF(value);
        return NULL;
    }
    return value;
}

static PyObject *HeadTable_clear(HeadTable *t, PyObject *unused) {
    (void)unused;
    return head_clear_all(t) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *HeadTable_forget_buckets(HeadTable *t, PyObject *unused) {
    (void)unused;
    int failed = 0;
    for (Py_ssize_t k = 0; k < t->used; k++) failed |= entry_release(&t->entries[k]) < 0;
    return failed ? NULL : Py_NewRef(Py_None);
}

static PyObject *HeadTable_release(HeadTable *t, PyObject *name) {
    Py_ssize_t len;
    const char *p = PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, &len) : NULL;
    if (!p) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "release(name: str)");
        return NULL;
    }
    head_entry *e = head_find(t, _Py_HashBytes(p, len), p, len, NULL);
    return e && entry_release(e) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyMethodDef HeadTable_methods[] = {
    {"get", (PyCFunction)(void (*)(void))HeadTable_get, METH_FASTCALL,
     "get(head, default=None) -> (name, kind) or default"},
    {"pop", (PyCFunction)(void (*)(void))HeadTable_pop, METH_FASTCALL,
     "pop(head[, default]) -> (name, kind), removed"},
    {"clear", (PyCFunction)HeadTable_clear, METH_NOARGS, "Remove every head."},
    {"forget_buckets", (PyCFunction)HeadTable_forget_buckets, METH_NOARGS,
     "Give up every owned bucket (fields into the lists): before any bucket is read."},
    {"release", (PyCFunction)HeadTable_release, METH_O,
     "release(name): give up the bucket the unkeyed name owns, before Python adds to it."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods HeadTable_mapping = {
    (lenfunc)HeadTable_len, (binaryfunc)HeadTable_subscript,
    (objobjargproc)HeadTable_ass_subscript,
};

static PySequenceMethods HeadTable_sequence = {
    .sq_contains = (objobjproc)HeadTable_contains,
};

static PyTypeObject HeadTable_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collector._fastfeed.HeadTable",
    .tp_basicsize = sizeof(HeadTable),
    .tp_dealloc = (destructor)HeadTable_dealloc,
    .tp_as_mapping = &HeadTable_mapping,
    .tp_as_sequence = &HeadTable_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "line head (bytes) -> (name, kind): the C pass's name cache; see _fastfeed.c",
    .tp_methods = HeadTable_methods,
    .tp_new = HeadTable_new,
};

/* outer[key] -> the inner dict, made if missing (borrowed, or NULL + error): buckets by
 * second, sketches by minute. */
static PyObject *table_for(PyObject *outer, long long key_value) {
    PyObject *key = PyLong_FromLongLong(key_value);
    if (!key) return NULL;
    PyObject *table = PyDict_GetItemWithError(outer, key);
    if (!table && !PyErr_Occurred()) {
        PyObject *fresh = PyDict_New();
        if (fresh) {
            if (PyDict_SetItem(outer, key, fresh) == 0) table = fresh;
            Py_DECREF(fresh); /* the dict holds it */
        }
    }
    Py_DECREF(key);
    if (table && !PyDict_CheckExact(table)) {
        PyErr_SetString(PyExc_TypeError, "feed: a table is not a dict");
        return NULL;
    }
    return table;
}

/* Remove outer[key] if it is empty (made for a sample Python then handled). */
static int drop_if_empty(PyObject *outer, PyObject *table, long long key_value) {
    if (PyDict_GET_SIZE(table) != 0) return 0;
    PyObject *key = PyLong_FromLongLong(key_value);
    if (!key) return -1;
    int failed = PyDict_DelItem(outer, key) < 0;
    Py_DECREF(key);
    return failed ? -1 : 0;
}

/* The minute of epoch second ts (floor, as Python's ts - ts % 60). */
static inline long long minute_of(long long ts) {
    long long r = ts % 60;
    return ts - (r < 0 ? r + 60 : r);
}

/* The sketch samples of one feed() call, added in order by the capsule's add_many
 * when PENDING_MAX are queued and before feed() returns: a batch lets the sketch
 * prefetch every sample's bin first, so their cache misses overlap (with thousands of
 * live sketches each sample's bin is one; docs/performance.md). Nothing reads a sketch
 * inside feed(), so adding later in the call changes no result. A queued sketch is
 * borrowed: its minute's table holds it for the whole call (feed only adds to the
 * tables, and drops a table only when it is empty; no Python code runs in between).
 * Not touching the sketch when a line is parsed is the point: a line costs no cache
 * miss on it until add_many, which overlaps them. */
#define PENDING_MAX 64

typedef struct {
    GfSketchSample items[PENDING_MAX];
    Py_ssize_t n;
} pending_samples;

static int pending_flush(pending_samples *q) {
    int rc = q->n ? sketch_api->add_many(q->items, q->n) : 0;
    q->n = 0;
    return rc;
}

static int pending_add(pending_samples *q, PyObject *sketch, double value, double weight) {
    if (q->n == PENDING_MAX && pending_flush(q) < 0) return -1;
    q->items[q->n++] = (GfSketchSample){sketch, value, weight};
    return 0;
}

/* Where a line's sample goes besides its entry: the second's table (NULL while the
 * entry owns the bucket of that second) and, for a value with sketches on
 * (``sketched``), the minute's table, where a new bucket finds its sketch. */
typedef struct {
    PyObject *table, *sketch_table;
    int sketched;
} bucket_place;

/* A list of ``size`` items whose first four are floats: a bucket feed can own. */
static int is_bucket(PyObject *bucket, Py_ssize_t size) {
    if (!PyList_CheckExact(bucket) || PyList_GET_SIZE(bucket) != size) return 0;
    PyObject **items = ((PyListObject *)bucket)->ob_item;
    return PyFloat_CheckExact(items[0]) && PyFloat_CheckExact(items[1]) &&
           PyFloat_CheckExact(items[2]) && PyFloat_CheckExact(items[3]);
}

/* Make the entry own the bucket of its name and second ``ts`` if one exists (it may
 * already): 1 if it owns one now, 0 if there is none, 2 if the one there is not a
 * bucket feed can own (Python handles the line), -1 on error. */
static int own_existing(head_entry *e, bucket_place *place, long long ts, Py_ssize_t size) {
    if (e->bucket && e->ts == ts) return 1;
    PyObject *bucket = PyDict_GetItemWithError(place->table, e->name); /* borrowed */
    if (!bucket) return PyErr_Occurred() ? -1 : 0;
    if (!is_bucket(bucket, size)) return 2;
    return entry_own(e, bucket, ts, size == 6) < 0 ? -1 : 1;
}

/* A sample merged into the owned bucket's fields: buckets.merge. min <= max holds in a
 * bucket, so a value is at most one of the two. */
static inline void entry_merge(head_entry *e, double new_cnt, double new_sum, double value) {
    e->cnt = new_cnt;
    e->sum = new_sum;
    if (value < e->mn)
        e->mn = value;
    else if (value > e->mx)
        e->mx = value;
}

/* Add one sample of the entry's name, second ``ts``, to its bucket (a value with
 * sketches on: and to its metric-minute's sketch): the arithmetic and checks of
 * Aggregator.add, in its order: overflow first (buckets.is_finite_bucket), then the
 * cap, which counts a new bucket and a new sketch as one slot each. Nothing is changed
 * unless everything is. Once added, the entry owns the bucket, so the name's next
 * sample of that second touches nothing but the entry (and the sketch). Returns 1 if
 * added, 0 if Python must handle it (overflow, the cap, an unexpected object), -1 on
 * error. */
static int add_sample(head_entry *e, bucket_place *place, long long ts, double value,
                      double rate, Py_ssize_t *created, Py_ssize_t capacity, int alpha_bp,
                      pending_samples *pending) {
    double weight = 1.0, total = value;
    if (rate != 1.0) {
        weight = 1.0 / rate;
        total = value * weight;
    }
    int sketched = place->sketched;
    int owned = own_existing(e, place, ts, sketched ? 6 : 5);
    if (owned != 0 && owned != 1) return owned < 0 ? -1 : 0;
    if (owned) {
        double new_cnt = e->cnt + weight, new_sum = e->sum + total;
        if (!isfinite(new_cnt) || !isfinite(new_sum)) return 0; /* overflow: Python's */
        /* a value bucket carries its minute's sketch: nothing new, so no cap to check */
        if (sketched && pending_add(pending, e->sketch, value, weight) < 0) return -1;
        entry_merge(e, new_cnt, new_sum, value);
        return 1;
    }
    if (!isfinite(total)) return 0; /* overflow: Python counts it */
    PyObject *sketch = NULL;       /* borrowed */
    if (sketched) {
        sketch = PyDict_GetItemWithError(place->sketch_table, e->name);
        if (!sketch && PyErr_Occurred()) return -1;
        /* checked here, once per metric-second: a bucket's slot 5 is a sketch from
         * this table (or Aggregator.add's, of the same type), and a line reads no
         * more of the sketch than its address (add_many checks the type again) */
        if (sketch && Py_TYPE(sketch) != sketch_api->type) return 0;
    }
    Py_ssize_t needed = 1 + (sketched && sketch == NULL);
    if (*created + needed > capacity) return 0; /* overload: Python counts it */
    if (sketched) {
        if (!sketch) {
            PyObject *fresh = sketch_api->new_sketch(alpha_bp);
            if (!fresh) return -1;
            int failed = PyDict_SetItem(place->sketch_table, e->name, fresh) < 0;
            Py_DECREF(fresh);
            if (failed) return -1;
            sketch = fresh; /* the dict holds it */
            (*created)++;
        }
        if (pending_add(pending, sketch, value, weight) < 0) return -1;
    }
    PyObject *fresh = PyList_New(sketched ? 6 : 5);
    if (!fresh) return -1;
    PyObject *items[4] = {PyFloat_FromDouble(weight), PyFloat_FromDouble(total),
                          PyFloat_FromDouble(value), NULL};
    if (items[2]) {
        items[3] = items[2];
        Py_INCREF(items[3]);
    }
    for (int i = 0; i < 4; i++) {
        if (!items[i]) { /* PyList dealloc skips NULL slots */
            for (int j = 0; j < 4; j++) Py_XDECREF(items[j]);
            Py_DECREF(fresh);
            return -1;
        }
    }
    for (int i = 0; i < 4; i++) PyList_SET_ITEM(fresh, i, items[i]);
    PyList_SET_ITEM(fresh, 4, Py_NewRef(e->kind));
    if (sketch) PyList_SET_ITEM(fresh, 5, Py_NewRef(sketch));
    int failed = PyDict_SetItem(place->table, e->name, fresh) < 0 ||
                 entry_own(e, fresh, ts, sketched) < 0;
    Py_DECREF(fresh); /* the table holds it */
    if (failed) return -1;
    (*created)++;
    return 1;
}

/* One gauge line of a known gauge: Aggregator.add's gauge rules. The gauge's new
 * value is the line's, or (a delta of a gauge in ``gauges``) the current value plus
 * the line's; it is the bucket's sample (weight 1: the rate of a gauge line is
 * ignored) and the minute's last value (``summaries`` of that minute). Checks first,
 * as add_sample: overflow, then the cap (a new bucket, a new minute entry). Returns 1
 * if added, 0 if Python must handle it, -1 on error. */
static int add_gauge(head_entry *e, bucket_place *place, long long ts, PyObject *summaries,
                     PyObject *gauges, double value, int delta, Py_ssize_t *created,
                     Py_ssize_t capacity) {
    PyObject *name = e->name;
    if (delta) {
        PyObject *current = PyDict_GetItemWithError(gauges, name);
        if (!current && PyErr_Occurred()) return -1;
        if (current) {
            if (!PyFloat_CheckExact(current)) return 0;
            value = PyFloat_AS_DOUBLE(current) + value;
        }
    }
    if (!isfinite(value)) return 0; /* overflow: Python counts it */
    int owned = own_existing(e, place, ts, 5);
    if (owned != 0 && owned != 1) return owned < 0 ? -1 : 0;
    double new_cnt = 1.0, new_sum = value;
    if (owned) {
        new_cnt = e->cnt + 1.0;
        new_sum = e->sum + value;
        if (!isfinite(new_sum) || !isfinite(new_cnt)) return 0;
    }
    int has_last = PyDict_Contains(summaries, name);
    if (has_last < 0) return -1;
    Py_ssize_t needed = !owned + !has_last;
    if (needed && *created + needed > capacity) return 0; /* overload: Python counts it */

    PyObject *v = PyFloat_FromDouble(value);
    if (!v) return -1;
    if (PyDict_SetItem(summaries, name, v) < 0 || PyDict_SetItem(gauges, name, v) < 0) {
        Py_DECREF(v);
        return -1;
    }
    *created += !has_last;
    if (owned) {
        Py_DECREF(v);
        entry_merge(e, new_cnt, new_sum, value);
        return 1;
    }
    PyObject *fresh = PyList_New(5);
    PyObject *one = fresh ? PyFloat_FromDouble(1.0) : NULL;
    if (!one) {
        Py_XDECREF(fresh);
        Py_DECREF(v);
        return -1;
    }
    PyList_SET_ITEM(fresh, 0, one);
    PyList_SET_ITEM(fresh, 1, Py_NewRef(v));
    PyList_SET_ITEM(fresh, 2, Py_NewRef(v));
    PyList_SET_ITEM(fresh, 3, v); /* takes our reference */
    PyList_SET_ITEM(fresh, 4, Py_NewRef(e->kind));
    int failed = PyDict_SetItem(place->table, name, fresh) < 0 || entry_own(e, fresh, ts, 0) < 0;
    Py_DECREF(fresh); /* the table holds it */
    if (failed) return -1;
    (*created)++;
    return 1;
}

static PyObject *feed_lines(PyObject *const *args, Py_ssize_t nargs, pending_samples *pending) {
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "feed takes 13 arguments");
        return NULL;
    }
    PyObject *data = args[0], *buckets = args[6], *summaries = args[8];
    PyObject *gauges = args[9];
    if (!PyBytes_CheckExact(data) || !PyDict_CheckExact(buckets) ||
        !PyDict_CheckExact(summaries) || !PyDict_CheckExact(gauges)) {
        PyErr_SetString(PyExc_TypeError, "feed: bytes and dicts expected");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[5], &HeadTable_Type)) {
        PyErr_SetString(PyExc_TypeError, "feed: known must be a HeadTable");
        return NULL;
    }
    HeadTable *known = (HeadTable *)args[5];
    limits lim;
    if (read_limits(args[2], args[3], args[4], &lim) < 0) return NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t capacity = PyLong_AsSsize_t(args[7]);
    long alpha_bp = PyLong_AsLong(args[10]);
    if (PyErr_Occurred()) return NULL;
    int value_sketches = PyObject_IsTrue(args[11]);
    if (value_sketches < 0) return NULL;
    unsigned long quiet = PyLong_AsUnsignedLong(args[12]); /* bit r: reason r may be counted here */
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t drops[GF_COUNT] = {0};
    int dropped = 0;
    if (value_sketches && !get_sketch_api()) {
        PyErr_SetString(PyExc_RuntimeError, "feed: sketches asked for, but "
                                            GF_SKETCH_CAPSULE " cannot be imported");
        return NULL;
    }
    if (alpha_bp < 1 || alpha_bp > 1000) { /* protocol.sketch MIN/MAX_ALPHA_BP */
        PyErr_SetString(PyExc_ValueError, "feed: alpha_bp out of range");
        return NULL;
    }
    const char *base = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Py_ssize_t added = 0, created = 0, tagged = 0;
    PyObject *now_table = NULL;     /* borrowed from buckets, looked up once */
    PyObject *now_summaries = NULL; /* borrowed from summaries: now's minute */
    long long now_minute = minute_of(lim.now);
    if (pos < 0) pos = 0;
    while (pos < size) {
        const char *p = base + pos;
        const char *nl = memchr(p, '\n', (size_t)(size - pos));
        Py_ssize_t len = nl ? nl - p : size - pos;
        Py_ssize_t next = pos + len + 1;
        if (len > 0 && p[len - 1] == '\r') len--;
        if (len == 0) {
            pos = next;
            continue;
        }
        parsed_line line;
        int reason = parse_line(p, len, &lim, 0, &line);
        if (reason < 0) return NULL;
        head_entry *entry = NULL; /* in known: no Python code runs until it is used */
        if (reason == GF_OK)
            entry = head_find(known, _Py_HashBytes(line.head, line.head_len), line.head,
                              line.head_len, NULL);
        if (!entry) {
            /* A bad line, a new name or a key prefix. A bad line whose reason was logged
             * within the interval (the caller's quiet bits) is only counted: here, with
             * the reason of the whole parser (names and keys checked: Python's order, held
             * by the differential tests). Anything else: Python validates, counts, logs,
             * checks keys, learns. */
            if (!quiet) break;
            parsed_line whole;
            int full = parse_line(p, len, &lim, 1, &whole);
            if (full < 0) return NULL;
            if (full == GF_OK || !(quiet >> full & 1)) break;
            drops[full]++;
            dropped = 1;
            pos = next;
            continue;
        }
        /* a |g of a name stored as a value before gauges: a plain value sample */
        if (line.kind == KIND_GAUGE && entry->kind_index == KIND_VALUE) line.kind = KIND_VALUE;
        if (line.kind == KIND_SET) break; /* sets: Python (Aggregator.add) */
        if (entry->kind_index != line.kind) break; /* a kind conflict: Python counts it */
        long long ts = line.has_ts ? line.ts : lim.now;
        int owned = entry->bucket && entry->ts == ts; /* this second's bucket */
        bucket_place place = {NULL, NULL, line.kind == KIND_VALUE && value_sketches};
        PyObject *table = NULL; /* the second's, unless the entry owns its bucket */
        if (!owned && ts == lim.now) {
            if (!now_table) {
                now_table = table_for(buckets, lim.now);
                if (!now_table) return NULL;
            }
            table = now_table;
        } else if (!owned) {
            table = table_for(buckets, ts);
            if (!table) return NULL;
        }
        place.table = table;
        PyObject *minute_table = NULL; /* summaries[minute of ts] */
        long long minute = minute_of(ts);
        if (line.kind == KIND_GAUGE || (place.sketched && !owned)) {
            if (minute == now_minute) {
                if (!now_summaries) {
                    now_summaries = table_for(summaries, now_minute);
                    if (!now_summaries) return NULL;
                }
                minute_table = now_summaries;
            } else {
                minute_table = table_for(summaries, minute);
                if (!minute_table) return NULL;
            }
        }
        place.sketch_table = minute_table;
        int done = line.kind == KIND_GAUGE
                       ? add_gauge(entry, &place, ts, minute_table, gauges, line.value,
                                   line.delta, &created, capacity)
                       : add_sample(entry, &place, ts, line.value, line.rate, &created,
                                    capacity, (int)alpha_bp, pending);
        if (done < 0) return NULL;
        if (done == 0) { /* made for nothing: no empty tables */
            if (table && PyDict_GET_SIZE(table) == 0) {
                if (drop_if_empty(buckets, table, ts) < 0) return NULL;
                if (table == now_table) now_table = NULL;
            }
            if (minute_table && PyDict_GET_SIZE(minute_table) == 0) {
                if (drop_if_empty(summaries, minute_table, minute) < 0) return NULL;
                if (minute_table == now_summaries) now_summaries = NULL;
            }
            break;
        }
        added++;
        tagged += line.tagged;
        pos = next;
    }
    if (pos > size) pos = size;
    if (!dropped) return Py_BuildValue("(nnnnO)", pos, added, created, tagged, Py_None);
    PyObject *counts = PyTuple_New(GF_COUNT);
    if (!counts) return NULL;
    for (int r = 0; r < GF_COUNT; r++) {
        PyObject *n = PyLong_FromSsize_t(drops[r]);
        if (!n) {
            Py_DECREF(counts);
            return NULL;
        }
        PyTuple_SET_ITEM(counts, r, n);
    }
    return Py_BuildValue("(nnnnN)", pos, added, created, tagged, counts);
}

static PyObject *feed(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    pending_samples pending;
    pending.n = 0;
    PyObject *result = feed_lines(args, nargs, &pending);
    if (!pending.n) return result;
    if (!result) { /* the first error is the one to raise; the queued samples still go in */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (pending_flush(&pending) < 0) PyErr_Clear();
        PyErr_Restore(type, value, traceback);
        return NULL;
    }
    if (pending_flush(&pending) < 0) Py_CLEAR(result);
    return result;
}

static PyObject *has_sketches(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(get_sketch_api() != NULL);
}

static PyObject *sample_tuple(const parsed_line *line) {
    const char *name = line->head;
    Py_ssize_t name_len = line->head_len;
    PyObject *token = Py_None;
    Py_INCREF(token);
    if (token_shaped(name, name_len)) { /* parse_line checked the "." after it */
        Py_DECREF(token);
        token = PyUnicode_DecodeASCII(name, TOKEN_LENGTH, NULL);
        if (!token) return NULL;
        name += TOKEN_LENGTH + 1;
        name_len -= TOKEN_LENGTH + 1;
    }
    PyObject *ts = line->has_ts ? PyLong_FromLongLong(line->ts) : Py_NewRef(Py_None);
    if (!ts) {
        Py_DECREF(token);
        return NULL;
    }
    PyObject *member = line->member ? PyUnicode_DecodeASCII(line->member, line->member_len, NULL)
                                    : Py_NewRef(Py_None);
    if (!member) {
        Py_DECREF(ts);
        Py_DECREF(token);
        return NULL;
    }
    return Py_BuildValue("(s#OddNNNO)", name, name_len, kind_objects[line->kind], line->value,
                         line->rate, ts, token, member, line->delta ? Py_True : Py_False);
}

static PyObject *parse_lines(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse_lines(data: bytes, now, max_age, max_len)");
        return NULL;
    }
    limits lim;
    if (read_limits(args[1], args[2], args[3], &lim) < 0) return NULL;
    const char *base = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]), pos = 0, tagged = 0;
    PyObject *samples = PyList_New(0), *reasons = PyList_New(0);
    if (!samples || !reasons) goto error;
    while (pos < size) {
        const char *p = base + pos;
        const char *nl = memchr(p, '\n', (size_t)(size - pos));
        Py_ssize_t len = nl ? nl - p : size - pos;
        pos += len + 1;
        if (len > 0 && p[len - 1] == '\r') len--;
        if (len == 0) continue;
        parsed_line line;
        int reason = parse_line(p, len, &lim, 1, &line);
        if (reason < 0) goto error;
        PyObject *item = reason == GF_OK ? sample_tuple(&line)
                                        : PyUnicode_FromString(reason_names[reason]);
        if (!item) goto error;
        int failed = PyList_Append(reason == GF_OK ? samples : reasons, item) < 0;
        Py_DECREF(item);
        if (failed) goto error;
        if (reason == GF_OK) tagged += line.tagged;
    }
    return Py_BuildValue("(NNn)", samples, reasons, tagged);
error:
    Py_XDECREF(samples);
    Py_XDECREF(reasons);
    return NULL;
}

#ifdef __linux__
#define RECV_MAX_SLOTS 256

static PyObject *recv_datagrams(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "recv_datagrams(fd, buffer, slot_size)");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) return NULL;
    Py_ssize_t slot = PyLong_AsSsize_t(args[2]);
    if (slot == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0) return NULL;
    Py_ssize_t slots = slot > 0 ? view.len / slot : 0;
    if (slots > RECV_MAX_SLOTS) slots = RECV_MAX_SLOTS;
    if (slots < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "buffer must hold at least one slot");
        return NULL;
    }
    struct mmsghdr msgs[RECV_MAX_SLOTS];
    struct iovec iov[RECV_MAX_SLOTS];
    memset(msgs, 0, sizeof msgs[0] * (size_t)slots);
    for (Py_ssize_t i = 0; i < slots; i++) {
        iov[i].iov_base = (char *)view.buf + i * slot;
        iov[i].iov_len = (size_t)slot;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n;
    do { /* nonblocking: no need to release the GIL */
        n = recvmmsg(fd, msgs, (unsigned int)slots, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        int error = errno;
        PyBuffer_Release(&view);
        if (error == EAGAIN || error == EWOULDBLOCK)
            return Py_BuildValue("(y#ii)", "", (Py_ssize_t)0, 0, 0);
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_ssize_t total = 0;
    int truncated = 0;
    for (int i = 0; i < n; i++) {
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
            truncated++;
        else
            total += (Py_ssize_t)msgs[i].msg_len + 1;
    }
    PyObject *data = PyBytes_FromStringAndSize(NULL, total);
    if (!data) {
        PyBuffer_Release(&view);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(data);
    for (int i = 0; i < n; i++) {
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) continue;
        memcpy(out, iov[i].iov_base, msgs[i].msg_len);
        out += msgs[i].msg_len;
        *out++ = '\n';
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nii)", data, n, truncated);
}
#endif

static PyMethodDef methods[] = {
    {"feed", (PyCFunction)(void (*)(void))feed, METH_FASTCALL,
     "Parse and aggregate the lines of known names; see collector/_fastfeed.c."},
    {"parse_lines", (PyCFunction)(void (*)(void))parse_lines, METH_FASTCALL,
     "The C parser in the shape of LineParser.parse, for differential tests."},
    {"has_sketches", has_sketches, METH_NOARGS,
     "True if protocol._sketch's C API can be imported: feed() can then add to sketches."},
#ifdef __linux__
    {"recv_datagrams", (PyCFunction)(void (*)(void))recv_datagrams, METH_FASTCALL,
     "Read waiting UDP datagrams with one recvmmsg call, joined; see collector/_fastfeed.c."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector._fastfeed", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastfeed(void) {
    static const char *const kind_names[KIND_COUNT] = {"counter", "value", "gauge", "set"};
    for (int i = 0; i < KIND_COUNT; i++) {
        kind_objects[i] = PyUnicode_InternFromString(kind_names[i]);
        if (!kind_objects[i]) return NULL;
    }
    if (PyType_Ready(&HeadTable_Type) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "HeadTable", (PyObject *)&HeadTable_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "FUTURE_TOLERANCE", FUTURE_TOLERANCE) < 0 ||
        PyModule_AddObject(m, "RATE_FLOOR", PyFloat_FromDouble(RATE_FLOOR)) < 0 ||
        PyModule_AddIntConstant(m, "MAX_NAME_LENGTH", MAX_NAME_LENGTH) < 0 ||
        PyModule_AddIntConstant(m, "TOKEN_LENGTH", TOKEN_LENGTH) < 0 ||
        PyModule_AddIntConstant(m, "MAX_MEMBER_LENGTH", MAX_MEMBER_LENGTH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    /* REASONS[r]: protocol.lines.Reason's value of C reason r (the bit r of feed's quiet
     * argument, the index r of the drop counts it returns); "" for r = 0, no drop. */
    PyObject *reasons = PyTuple_New(GF_COUNT);
    if (!reasons) {
        Py_DECREF(m);
        return NULL;
    }
    for (int r = 0; r < GF_COUNT; r++) {
        PyObject *text = PyUnicode_FromString(r ? reason_names[r] : "");
        if (!text) {
            Py_DECREF(reasons);
            Py_DECREF(m);
            return NULL;
        }
        PyTuple_SET_ITEM(reasons, r, text);
    }
    if (PyModule_AddObject(m, "REASONS", reasons) < 0) {
        Py_DECREF(reasons);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
