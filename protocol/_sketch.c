/* protocol._sketch: the C implementation of protocol/sketch.py's DDSketch (the reference).
 *
 * Sketch(alpha_bp=100) computes the same bins, the same weights (each sum of doubles in
 * the reference's order), the same bytes and the same answers as protocol.sketch.PySketch,
 * bit for bit (tests/test_sketch.py holds them equal on random operations). What differs
 * is the store: a dense array of weights per sign (offset + capacity) instead of a dict,
 * so add is O(1): a key's weight sits at w[key - base].
 *
 * A store starts as a log: its first samples as (key, weight) entries in the order they
 * came, up to LOG_MAX of them, each added by an append; it becomes dense (the log
 * replayed into the array, in order) when the log is full or a sample would collapse
 * bins. The collector makes a sketch per metric and flush (one second by default) that
 * takes tens of samples: for them a dense array would be kilobytes of slots to
 * allocate and fill, thousands of times a second, and a table of keys one more cache
 * miss per sample (scripts/sketch_feed_bench.py). A log is read through a snapshot:
 * its entries sorted by key (a stable sort) and each key's weights summed in arrival
 * order from 0.0, which are the dense store's sums, bit for bit.
 *
 * Store invariants (those of the reference's _Store): the present keys lie in
 * [hi - MAX_BINS + 1, hi], hi the highest one; lo is the lowest one; n counts them. An
 * absent key's slot holds ABSENT (-1.0): a present weight is >= 0 (bytes may carry a
 * weight of 0, which is a bin all the same: it is written back). The array holds at most
 * 2 * MAX_BINS slots: the slack lets a window that slides (ever higher values) move
 * once per MAX_BINS keys rather than at every add.
 *
 * Memory safety: every read of bytes is bounded by the buffer's length; a varint has at
 * most 64 bits; a bin count is at most MAX_BINS and a key delta is range-checked before
 * it is added (no signed overflow); every allocation is at most 2 * MAX_BINS slots.
 * merge_bytes decodes and validates the whole blob before it changes the sketch.
 *
 * The C API (protocol/sketch_capi.h) is a capsule, protocol._sketch._C_API.
 *
 * Build with -ffp-contract=off (setup.py): a fused multiply-add would round differently
 * from Python's separate multiply and add.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sketch_capi.h"

#define VERSION 1
#define DEFAULT_ALPHA_BP 100
#define MIN_ALPHA_BP 1
#define MAX_ALPHA_BP 1000
#define MIN_INDEXABLE 1e-9
#define MAX_BINS 2048
#define MAX_SLOTS (2 * MAX_BINS)
#define MAX_EXACT 9007199254740992.0     /* 2**53 */
#define MAX_WEIGHT 1267650600228229401496703205376.0 /* 2**100, as in sketch.py */
#define EXP_SAFE 709.0                   /* 2 * exp(709) is finite */
#define MAX_DELTA ((int64_t)1 << 32)     /* any two valid keys are closer than this */
#define ABSENT (-1.0)
#define PRESENT(w) ((w) >= 0.0)
#define MAX_PARTIALS 2112                /* fsum: non-overlapping partials span 2098 bits */

/* ---------------------------------------------------------------- errors */

static PyObject *sketch_error_cached = NULL;

/* protocol.sketch.SketchError (a ValueError), looked up when first needed: sketch.py
 * imports this module, so it cannot be imported at this module's init. */
static PyObject *sketch_error(void) {
    if (sketch_error_cached) return sketch_error_cached;
    PyObject *mod = PyImport_ImportModule("protocol.sketch");
    if (mod) {
        PyObject *err = PyObject_GetAttrString(mod, "SketchError");
        Py_DECREF(mod);
        if (err && PyExceptionClass_Check(err)) {
            sketch_error_cached = err;
            return err;
        }
        Py_XDECREF(err);
    }
    PyErr_Clear();
    return PyExc_ValueError;
}

static int fail(const char *message) {
    PyErr_SetString(sketch_error(), message);
    return -1;
}

/* ------------------------------------------------------------ the numbers */

static double ln_gamma(int alpha_bp) {
    double alpha = alpha_bp / 10000.0;
    return log1p(2.0 * alpha / (1.0 - alpha));
}

static int64_t bin_key(double magnitude, double ln_g) {
    return (int64_t)ceil(log(magnitude) / ln_g);
}

/* sketch.bin_value: 2 * gamma**k / (1 + gamma), computed so that it never overflows
 * (the highest bins of values near DBL_MAX: clamped to DBL_MAX, which is nearer to
 * every value of the bin than the unclamped representative). */
static double bin_value(int64_t key, double ln_g) {
    double x = (double)key * ln_g;
    if (x < EXP_SAFE) return 2.0 * exp(x) / (1.0 + exp(ln_g));
    double v = exp(x - log((1.0 + exp(ln_g)) / 2.0));
    return isinf(v) ? DBL_MAX : v;
}

/* math.fsum of non-negative doubles (CPython's algorithm: Shewchuk's exact partials,
 * then a correctly rounded total, which does not depend on the order of the terms, so
 * the dict order of the reference does not matter). */
typedef struct {
    double p[MAX_PARTIALS];
    int n;
    double special; /* a non-finite term (only +inf can occur: weights are >= 0) */
} Fsum;

static void fsum_init(Fsum *s) {
    s->n = 0;
    s->special = 0.0;
}

static void fsum_add(Fsum *s, double x) {
    int i, j;
    double xsave = x;
    for (i = j = 0; j < s->n; j++) {
        double y = s->p[j];
        if (fabs(x) < fabs(y)) {
            double t = x;
            x = y;
            y = t;
        }
        double hi = x + y;
        double yr = hi - x;
        double lo = y - yr;
        if (lo != 0.0) s->p[i++] = lo;
        x = hi;
    }
    s->n = i;
    if (x != 0.0) {
        if (!isfinite(x)) {
            /* Python raises OverflowError on an intermediate overflow; weights are at
             * most MAX_WEIGHT each, so a sum of them cannot get there. */
            s->special += isfinite(xsave) ? HUGE_VAL : xsave;
            s->n = 0;
        } else if (s->n < MAX_PARTIALS) {
            s->p[s->n++] = x;
        }
    }
}

static double fsum_result(Fsum *s) {
    if (s->special != 0.0) return s->special;
    int n = s->n;
    double hi = 0.0, lo = 0.0, x, y, yr;
    if (n > 0) {
        hi = s->p[--n];
        while (n > 0) {
            x = hi;
            y = s->p[--n];
            hi = x + y;
            yr = hi - x;
            lo = y - yr;
            if (lo != 0.0) break;
        }
        if (n > 0 && ((lo < 0.0 && s->p[n - 1] < 0.0) || (lo > 0.0 && s->p[n - 1] > 0.0))) {
            y = lo * 2.0;
            x = hi + y;
            yr = x - hi;
            if (y == yr) hi = x;
        }
    }
    return hi;
}

/* ------------------------------------------------------------- the store */

typedef struct {
    int64_t key;
    double w;
} Bin;

#define LOG_MAX 128 /* slots: 64 to 128 samples */

/* A log slot: a sample's key and its weight as a float where that is exact (1, 10,
 * 1/0.5: the common weights); otherwise the weight is NaN (no weight is) and the next
 * slot holds the double's bits. Keys fit in 32 bits: every key a store holds lies
 * within key_range of alpha >= 1 bp (about -1.1e5 .. 3.6e6), or one window below. */
typedef struct {
    int32_t key;
    float w;
} LogSlot;
_Static_assert(sizeof(LogSlot) == sizeof(double), "a weight's bits fill one slot");

/* 40 bytes, so that a sketch's header, ln_g and positive store share one cache line:
 * what an add of a positive value reads. Keys and counts fit in 32 bits (LogSlot). */
typedef struct {
    double *w;      /* dense: w[i] is the weight of key base + i, or ABSENT; a log: NULL */
    LogSlot *sp;    /* a log: n slots used (room for spcap), in arrival order */
    int32_t base;
    int32_t lo, hi; /* the lowest and highest present key (when n > 0) */
    int32_t cap;    /* dense: slots, at most MAX_SLOTS */
    int32_t n;      /* dense: the present keys; a log: its slots (>= its keys) */
    int32_t spcap;
} Store;
_Static_assert(sizeof(Store) == 40, "see above");

static void store_clear(Store *s) {
    PyMem_Free(s->w);
    PyMem_Free(s->sp);
    s->w = NULL;
    s->sp = NULL;
    s->base = s->lo = s->hi = 0;
    s->cap = s->n = s->spcap = 0;
}

/* Make keys a..b addressable (b - a < MAX_BINS; every present key lies in a..b). */
static int store_fit(Store *s, int64_t a, int64_t b) {
    if (s->w && a >= s->base && b < s->base + s->cap) return 0;
    int64_t span = b - a + 1;
    Py_ssize_t cap = 16;
    while (cap < 2 * span && cap < MAX_SLOTS) cap *= 2;
    if (cap < s->cap) cap = s->cap; /* never shrink: the sketch grew this wide once */
    int64_t slack = cap - span, base;
    if (!s->w || (a < s->base && b >= s->base + s->cap))
        base = a - slack / 2;
    else if (a < s->base)
        base = b - cap + 1; /* growing down: the slack below */
    else
        base = a; /* growing up: the slack above */
    double *w = PyMem_Malloc((size_t)cap * sizeof(double));
    if (!w) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < cap; i++) w[i] = ABSENT;
    if (s->w) { /* the old slots that fall in the new window: all the present ones */
        int64_t from = s->base > base ? s->base : base;
        int64_t old_end = s->base + s->cap, new_end = base + cap;
        int64_t to = old_end < new_end ? old_end : new_end;
        if (to > from)
            memcpy(w + (from - base), s->w + (from - s->base), (size_t)(to - from) * sizeof(double));
        PyMem_Free(s->w);
    }
    s->w = w;
    s->base = base;
    s->cap = cap;
    return 0;
}

static inline void store_put(Store *s, int64_t key, double weight) {
    double *p = &s->w[key - s->base];
    if (PRESENT(*p)) {
        *p += weight;
    } else {
        *p = 0.0 + weight;
        s->n++;
    }
}

/* _Store.add of the reference: keys within (hi - MAX_BINS, hi]; a new highest key
 * collapses the keys below its window into the window's lowest key. */
static int dense_add(Store *s, int64_t key, double weight) {
    if (s->n == 0) {
        if (store_fit(s, key, key) < 0) return -1;
        s->lo = s->hi = key;
        store_put(s, key, weight);
        return 0;
    }
    if (key > s->hi) {
        int64_t floor_ = key - MAX_BINS + 1;
        if (s->lo < floor_) {
            /* the fallen bins, summed in ascending key order from 0.0 */
            double total = 0.0;
            int64_t top = s->hi < floor_ - 1 ? s->hi : floor_ - 1;
            for (int64_t k = s->lo; k <= top; k++) {
                double *p = &s->w[k - s->base];
                if (PRESENT(*p)) {
                    total += *p;
                    *p = ABSENT;
                    s->n--;
                }
            }
            if (store_fit(s, floor_, key) < 0) return -1;
            double *p = &s->w[floor_ - s->base];
            if (PRESENT(*p)) {
                *p = *p + total;
            } else {
                *p = 0.0 + total;
                s->n++;
            }
            s->lo = floor_;
        } else if (store_fit(s, s->lo, key) < 0) {
            return -1;
        }
        s->hi = key;
        store_put(s, key, weight);
        return 0;
    }
    if (key <= s->hi - MAX_BINS) key = s->hi - MAX_BINS + 1;
    if (key < s->lo) {
        if (store_fit(s, key, s->hi) < 0) return -1;
        s->lo = key;
    }
    store_put(s, key, weight);
    return 0;
}

/* The log's samples as (key, weight), in arrival order, into out (room for s->n). */
static Py_ssize_t log_samples(const Store *s, Bin *out) {
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < s->n; i++, m++) {
        out[m].key = s->sp[i].key;
        if (isnan(s->sp[i].w)) {
            memcpy(&out[m].w, &s->sp[++i], sizeof(double));
        } else {
            out[m].w = (double)s->sp[i].w;
        }
    }
    return m;
}

/* A log made dense: the window lo..hi, then its samples added in arrival order. */
static int store_densify(Store *s) {
    Bin samples[LOG_MAX];
    Py_ssize_t m = log_samples(s, samples);
    if (m && store_fit(s, s->lo, s->hi) < 0) return -1;
    s->n = 0;
    for (Py_ssize_t i = 0; i < m; i++) store_put(s, samples[i].key, samples[i].w);
    PyMem_Free(s->sp);
    s->sp = NULL;
    s->spcap = 0;
    return 0;
}

/* dense_add's rules on a log. A collapse, or a full log, makes the store dense first
 * and leaves the add to dense_add; a key below the window is moved to the window's
 * lowest key here, as dense_add does, so an entry's key is the bin it goes to. */
static int log_add(Store *s, int64_t key, double weight) {
    if (s->n) {
        if (key > s->hi) {
            if (s->lo < key - MAX_BINS + 1) /* the keys below key's window collapse */
                return store_densify(s) < 0 ? -1 : dense_add(s, key, weight);
        } else if (key <= s->hi - MAX_BINS) {
            key = s->hi - MAX_BINS + 1;
        }
    }
    float narrow = weight <= FLT_MAX ? (float)weight : NAN; /* (a cast beyond it is UB) */
    Py_ssize_t slots = (double)narrow == weight ? 1 : 2;
    if (s->n + slots > LOG_MAX) return store_densify(s) < 0 ? -1 : dense_add(s, key, weight);
    if (s->n + slots > s->spcap) {
        Py_ssize_t cap = s->spcap ? 2 * s->spcap : 16;
        LogSlot *sp = PyMem_Realloc(s->sp, (size_t)cap * sizeof(LogSlot));
        if (!sp) {
            PyErr_NoMemory();
            return -1;
        }
        s->sp = sp;
        s->spcap = cap;
    }
    int first = s->n == 0;
    if (slots == 1) {
        s->sp[s->n++] = (LogSlot){(int32_t)key, narrow};
    } else {
        s->sp[s->n++] = (LogSlot){(int32_t)key, NAN};
        memcpy(&s->sp[s->n++], &weight, sizeof(double));
    }
    if (first || key > s->hi) s->hi = key;
    if (first || key < s->lo) s->lo = key;
    return 0;
}

static int store_add(Store *s, int64_t key, double weight) {
    return s->w ? dense_add(s, key, weight) : log_add(s, key, weight);
}

static Py_ssize_t store_snapshot(const Store *s, Bin *out);

static double store_sum(const Store *s) {
    Fsum f;
    fsum_init(&f);
    if (!s->w) { /* the bins' weights, each a sum of its entries (not the entries) */
        Bin bins[LOG_MAX];
        Py_ssize_t n = store_snapshot(s, bins);
        for (Py_ssize_t i = 0; i < n; i++) fsum_add(&f, bins[i].w);
    } else if (s->n)
        for (int64_t k = s->lo; k <= s->hi; k++) {
            double w = s->w[k - s->base];
            if (PRESENT(w)) fsum_add(&f, w);
        }
    return fsum_result(&f);
}

/* ------------------------------------------------------------ the sketch */

typedef struct {
    PyObject_HEAD
    double ln_g;
    Store pos; /* with the header and ln_g: the first cache line (Store) */
    Store neg;
    double zero;
    int alpha_bp;
} SketchObject;

static PyTypeObject SketchType;

/* Decoded bytes, or a snapshot of a sketch: bins[0..npos) positive, then nneg negative,
 * each in ascending key order. */
typedef struct {
    int alpha_bp;
    double zero;
    Py_ssize_t npos, nneg;
    Bin *bins;
} Bins;

/* The store and key of a value, or NULL for the zero count (|value| < MIN_INDEXABLE). */
static inline Store *value_store(SketchObject *self, double value, int64_t *key) {
    if (value >= MIN_INDEXABLE) {
        *key = bin_key(value, self->ln_g);
        return &self->pos;
    }
    if (value <= -MIN_INDEXABLE) {
        *key = bin_key(-value, self->ln_g);
        return &self->neg;
    }
    return NULL;
}

static void sketch_add_value(SketchObject *self, double value, double weight, int *err) {
    int64_t key;
    Store *store = value_store(self, value, &key);
    if (!store)
        self->zero += weight;
    else if (store_add(store, key, weight) < 0)
        *err = -1;
}

static inline int valid_weight(double weight) {
    return weight > 0.0 && weight <= MAX_WEIGHT;
}

static int check_sample(double value, double weight) {
    if (!isfinite(value)) return fail("a sketch takes finite values");
    if (!valid_weight(weight)) return fail("a sample's weight must be > 0 and at most 2**100");
    return 0;
}

/* _add_bins of the reference. */
static int sketch_add_bins(SketchObject *self, const Bins *b) {
    int err = 0;
    self->zero += b->zero;
    const Bin *pos = b->bins, *neg = b->bins + b->npos;
    if (b->alpha_bp == self->alpha_bp) {
        for (Py_ssize_t i = 0; i < b->npos; i++)
            if (store_add(&self->pos, pos[i].key, pos[i].w) < 0) return -1;
        for (Py_ssize_t i = 0; i < b->nneg; i++)
            if (store_add(&self->neg, neg[i].key, neg[i].w) < 0) return -1;
        return 0;
    }
    double other_ln = ln_gamma(b->alpha_bp);
    for (Py_ssize_t i = 0; i < b->npos && !err; i++)
        sketch_add_value(self, bin_value(pos[i].key, other_ln), pos[i].w, &err);
    for (Py_ssize_t i = 0; i < b->nneg && !err; i++)
        sketch_add_value(self, -bin_value(neg[i].key, other_ln), neg[i].w, &err);
    return err;
}

/* The present bins in ascending key order into out (room for s->n); their count. */
static Py_ssize_t store_snapshot(const Store *s, Bin *out) {
    Py_ssize_t n = 0;
    if (!s->w) {
        /* a stable insertion sort of the log (at most LOG_MAX entries), then each key's
         * weights summed in arrival order from 0.0: store_put's sums */
        Py_ssize_t m = log_samples(s, out);
        for (Py_ssize_t i = 1; i < m; i++) {
            Bin b = out[i];
            Py_ssize_t j = i;
            for (; j > 0 && out[j - 1].key > b.key; j--) out[j] = out[j - 1];
            out[j] = b;
        }
        for (Py_ssize_t i = 0; i < m; i++) {
            if (n && out[n - 1].key == out[i].key) {
                out[n - 1].w += out[i].w;
            } else {
                out[n] = (Bin){out[i].key, 0.0 + out[i].w};
                n++;
            }
        }
    } else if (s->n)
        for (int64_t k = s->lo; k <= s->hi; k++) {
            double w = s->w[k - s->base];
            if (PRESENT(w)) {
                out[n].key = k;
                out[n].w = w;
                n++;
            }
        }
    return n;
}

static int sketch_init_fields(SketchObject *self, int alpha_bp) {
    self->alpha_bp = alpha_bp;
    self->ln_g = ln_gamma(alpha_bp);
    self->zero = 0.0;
    memset(&self->pos, 0, sizeof(Store));
    memset(&self->neg, 0, sizeof(Store));
    return 0;
}

static int parse_alpha(PyObject *obj, int *out) {
    PyObject *index = PyNumber_Index(obj);
    if (!index) return -1;
    int overflow;
    long v = PyLong_AsLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < MIN_ALPHA_BP || v > MAX_ALPHA_BP)
        return fail("alpha must be 1..1000 basis points");
    *out = (int)v;
    return 0;
}

static PyObject *Sketch_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"alpha_bp", NULL};
    PyObject *alpha_obj = NULL;
    int alpha_bp = DEFAULT_ALPHA_BP;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:Sketch", kwlist, &alpha_obj)) return NULL;
    if (alpha_obj && parse_alpha(alpha_obj, &alpha_bp) < 0) return NULL;
    SketchObject *self = (SketchObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    sketch_init_fields(self, alpha_bp);
    return (PyObject *)self;
}

static void Sketch_dealloc(SketchObject *self) {
    store_clear(&self->pos);
    store_clear(&self->neg);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------- the bytes */

typedef struct {
    const uint8_t *data;
    Py_ssize_t len, pos;
} Reader;

static int rd_varint(Reader *r, uint64_t *out) {
    uint64_t n = 0;
    int shift = 0;
    for (;;) {
        if (r->pos >= r->len || shift > 63) return fail("truncated or overlong varint in a sketch");
        uint8_t byte = r->data[r->pos++];
        if (shift == 63 && (byte & 0x7F) > 1) return fail("a varint over 64 bits in a sketch");
        n |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *out = n;
            return 0;
        }
        shift += 7;
    }
}

static int rd_weight(Reader *r, double *out) {
    uint64_t n;
    if (rd_varint(r, &n) < 0) return -1;
    if (n != 1) {
        if (n & 1) return fail("bad weight in a sketch");
        *out = (double)(int64_t)(n >> 1);
        return 0;
    }
    if (r->len - r->pos < 8) return fail("truncated weight in a sketch");
    uint64_t bits = 0;
    for (int i = 7; i >= 0; i--) bits = (bits << 8) | r->data[r->pos + i];
    r->pos += 8;
    double w;
    memcpy(&w, &bits, sizeof w);
    if (!(isfinite(w) && w >= 0.0 && w <= MAX_WEIGHT))
        return fail("non-finite, negative or too large weight in a sketch");
    *out = w;
    return 0;
}

static int rd_store(Reader *r, int64_t kmin, int64_t kmax, Bin *out, Py_ssize_t room,
                    Py_ssize_t *count) {
    uint64_t size;
    if (rd_varint(r, &size) < 0) return -1;
    if (size > MAX_BINS) return fail("too many bins in a sketch");
    if ((Py_ssize_t)size > room) return fail("truncated sketch"); /* each bin takes 2+ bytes */
    int64_t key = 0;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)size; i++) {
        uint64_t z;
        if (rd_varint(r, &z) < 0) return -1;
        int64_t delta = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
        if (i && delta <= 0) return fail("bin keys out of order in a sketch");
        if (delta > MAX_DELTA || delta < -MAX_DELTA) return fail("bin key out of range in a sketch");
        key += delta;
        if (key < kmin || key > kmax) return fail("bin key out of range in a sketch");
        out[i].key = key;
        if (rd_weight(r, &out[i].w) < 0) return -1;
    }
    *count = (Py_ssize_t)size;
    return 0;
}

/* Decode and validate all of data into b (b->bins: PyMem_Free it). */
static int decode(const uint8_t *data, Py_ssize_t len, Bins *b) {
    b->bins = NULL;
    if (len < 4 || data[0] != VERSION) return fail("not a version 1 sketch");
    int alpha_bp = data[1] | (data[2] << 8);
    if (alpha_bp < MIN_ALPHA_BP || alpha_bp > MAX_ALPHA_BP) return fail("bad alpha in a sketch");
    b->alpha_bp = alpha_bp;
    Reader r = {data, len, 3};
    if (rd_weight(&r, &b->zero) < 0) return -1;
    /* at most (len - 3) / 2 bins fit in the bytes, at most MAX_BINS per store */
    Py_ssize_t room = (len - r.pos) / 2;
    if (room > 2 * MAX_BINS) room = 2 * MAX_BINS;
    b->bins = PyMem_Malloc((size_t)(room + 1) * sizeof(Bin));
    if (!b->bins) {
        PyErr_NoMemory();
        return -1;
    }
    double ln_g = ln_gamma(alpha_bp);
    int64_t kmin = bin_key(MIN_INDEXABLE, ln_g), kmax = bin_key(DBL_MAX, ln_g);
    if (rd_store(&r, kmin, kmax, b->bins, room, &b->npos) < 0) goto error;
    if (rd_store(&r, kmin, kmax, b->bins + b->npos, room - b->npos, &b->nneg) < 0) goto error;
    if (r.pos != len) {
        fail("trailing bytes after a sketch");
        goto error;
    }
    return 0;
error:
    PyMem_Free(b->bins);
    b->bins = NULL;
    return -1;
}

typedef struct {
    uint8_t *p;
} Writer;

static inline void put_varint(Writer *wr, uint64_t n) {
    while (n >= 0x80) {
        *wr->p++ = (uint8_t)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *wr->p++ = (uint8_t)n;
}

static inline void put_weight(Writer *wr, double w) {
    if (w >= 0.0 && w < MAX_EXACT && w == (double)(int64_t)w) {
        put_varint(wr, (uint64_t)(int64_t)w << 1);
        return;
    }
    uint64_t bits;
    memcpy(&bits, &w, sizeof bits);
    *wr->p++ = 1;
    for (int i = 0; i < 8; i++) *wr->p++ = (uint8_t)(bits >> (8 * i));
}

static inline void put_bin(Writer *wr, int64_t key, double w, int64_t *previous) {
    int64_t delta = key - *previous;
    put_varint(wr, ((uint64_t)delta << 1) ^ (uint64_t)(delta >> 63));
    put_weight(wr, w);
    *previous = key;
}

static void put_store(Writer *wr, const Store *s) {
    int64_t previous = 0;
    if (!s->w) {
        Bin bins[LOG_MAX];
        Py_ssize_t n = store_snapshot(s, bins);
        put_varint(wr, (uint64_t)n);
        for (Py_ssize_t i = 0; i < n; i++) put_bin(wr, bins[i].key, bins[i].w, &previous);
        return;
    }
    put_varint(wr, (uint64_t)s->n);
    if (s->n) {
        for (int64_t k = s->lo; k <= s->hi; k++) {
            double w = s->w[k - s->base];
            if (PRESENT(w)) put_bin(wr, k, w, &previous);
        }
    }
}

static PyObject *Sketch_to_bytes(SketchObject *self, PyObject *Py_UNUSED(ignored)) {
    /* a bin takes at most 10 (key) + 9 (weight) bytes; a store <= MAX_BINS bins */
    size_t size = 3 + 9 + 2 * 10 + (size_t)(self->pos.n + self->neg.n) * 19;
    uint8_t *buf = PyMem_Malloc(size);
    if (!buf) return PyErr_NoMemory();
    Writer wr = {buf};
    *wr.p++ = VERSION;
    *wr.p++ = (uint8_t)(self->alpha_bp & 0xFF);
    *wr.p++ = (uint8_t)(self->alpha_bp >> 8);
    put_weight(&wr, self->zero);
    put_store(&wr, &self->pos);
    put_store(&wr, &self->neg);
    PyObject *out = PyBytes_FromStringAndSize((const char *)buf, wr.p - buf);
    PyMem_Free(buf);
    return out;
}

static int merge_data(SketchObject *self, const uint8_t *data, Py_ssize_t len) {
    Bins b;
    if (decode(data, len, &b) < 0) return -1;
    int rc = sketch_add_bins(self, &b);
    PyMem_Free(b.bins);
    return rc;
}

static PyObject *Sketch_merge_bytes(SketchObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    int rc = merge_data(self, view.buf, view.len);
    PyBuffer_Release(&view);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Sketch_from_bytes(PyObject *cls, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Bins b;
    PyObject *out = NULL;
    if (decode(view.buf, view.len, &b) < 0) goto done;
    out = PyObject_CallFunction(cls, "i", b.alpha_bp);
    if (out && !PyObject_TypeCheck(out, &SketchType)) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_TypeError, "from_bytes: not a Sketch type");
    }
    if (out && sketch_add_bins((SketchObject *)out, &b) < 0) Py_CLEAR(out);
    PyMem_Free(b.bins);
done:
    PyBuffer_Release(&view);
    return out;
}

static PyObject *Sketch_merge(SketchObject *self, PyObject *arg) {
    if (!PyObject_TypeCheck(arg, &SketchType)) {
        PyErr_Format(PyExc_TypeError, "merge takes a Sketch, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    SketchObject *other = (SketchObject *)arg;
    /* a snapshot first, as the reference's sorted_bins(): merging a sketch into itself
     * doubles it */
    Bins b;
    b.alpha_bp = other->alpha_bp;
    b.zero = other->zero;
    b.bins = PyMem_Malloc((size_t)(other->pos.n + other->neg.n + 1) * sizeof(Bin));
    if (!b.bins) return PyErr_NoMemory();
    b.npos = store_snapshot(&other->pos, b.bins);
    b.nneg = store_snapshot(&other->neg, b.bins + b.npos);
    int rc = sketch_add_bins(self, &b);
    PyMem_Free(b.bins);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ add */

static int as_double(PyObject *obj, double *out) {
    if (PyFloat_CheckExact(obj)) {
        *out = PyFloat_AS_DOUBLE(obj);
        return 0;
    }
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

static PyObject *Sketch_add(SketchObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames) {
    PyObject *ov = NULL, *ow = NULL;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "add() takes at most 2 arguments");
        return NULL;
    }
    if (nargs >= 1) ov = args[0];
    if (nargs == 2) ow = args[1];
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nk; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            PyObject **slot;
            if (PyUnicode_CompareWithASCIIString(name, "value") == 0)
                slot = &ov;
            else if (PyUnicode_CompareWithASCIIString(name, "weight") == 0)
                slot = &ow;
            else {
                PyErr_Format(PyExc_TypeError, "add() got an unexpected keyword argument '%U'", name);
                return NULL;
            }
            if (*slot) {
                PyErr_Format(PyExc_TypeError, "add() got multiple values for argument '%U'", name);
                return NULL;
            }
            *slot = args[nargs + i];
        }
    }
    if (!ov) {
        PyErr_SetString(PyExc_TypeError, "add() missing required argument 'value'");
        return NULL;
    }
    double value, weight = 1.0;
    if (as_double(ov, &value) < 0) return NULL;
    if (ow && as_double(ow, &weight) < 0) return NULL;
    if (check_sample(value, weight) < 0) return NULL;
    int err = 0;
    sketch_add_value(self, value, weight, &err);
    if (err) return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ reading */

typedef struct {
    double v, w;
} Point;

/* The reference's _ordered(): (value, weight) of every bin, lowest value first. The
 * caller frees *out. */
static Py_ssize_t ordered(SketchObject *self, Point **out) {
    Py_ssize_t n = 0, size = self->pos.n + self->neg.n + 1;
    Point *pts = PyMem_Malloc((size_t)size * sizeof(Point));
    if (!pts) {
        PyErr_NoMemory();
        return -1;
    }
    const Store *neg = &self->neg, *pos = &self->pos;
    Bin bins[LOG_MAX];
    if (!neg->w) {
        for (Py_ssize_t i = store_snapshot(neg, bins) - 1; i >= 0; i--)
            pts[n++] = (Point){-bin_value(bins[i].key, self->ln_g), bins[i].w};
    } else if (neg->n) {
        for (int64_t k = neg->hi; k >= neg->lo; k--) {
            double w = neg->w[k - neg->base];
            if (PRESENT(w)) pts[n++] = (Point){-bin_value(k, self->ln_g), w};
        }
    }
    if (self->zero != 0.0) pts[n++] = (Point){0.0, self->zero};
    if (!pos->w) {
        Py_ssize_t count = store_snapshot(pos, bins);
        for (Py_ssize_t i = 0; i < count; i++)
            pts[n++] = (Point){bin_value(bins[i].key, self->ln_g), bins[i].w};
    } else if (pos->n) {
        for (int64_t k = pos->lo; k <= pos->hi; k++) {
            double w = pos->w[k - pos->base];
            if (PRESENT(w)) pts[n++] = (Point){bin_value(k, self->ln_g), w};
        }
    }
    *out = pts;
    return n;
}

static PyObject *Sketch_quantiles(SketchObject *self, PyObject *qs) {
    Point *pts;
    Py_ssize_t n = ordered(self, &pts);
    if (n < 0) return NULL;
    PyObject *iter = NULL, *answers = NULL, *item;
    Fsum *f = PyMem_Malloc(sizeof(Fsum));
    if (!f) {
        PyErr_NoMemory();
        goto error;
    }
    fsum_init(f);
    for (Py_ssize_t i = 0; i < n; i++) fsum_add(f, pts[i].w);
    double total = fsum_result(f);
    iter = PyObject_GetIter(qs);
    if (!iter) goto error;
    answers = PyList_New(0);
    if (!answers) goto error;
    while ((item = PyIter_Next(iter))) {
        double q;
        int rc = as_double(item, &q);
        Py_DECREF(item);
        if (rc < 0) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) goto error;
            PyErr_Clear();
            q = NAN; /* a huge int: outside 0..1 */
        }
        if (!(0.0 <= q && q <= 1.0)) {
            char *text = PyOS_double_to_string(q, 'r', 0, 0, NULL);
            PyErr_Format(sketch_error(), "quantile %s is outside 0..1", text ? text : "?");
            PyMem_Free(text);
            goto error;
        }
        PyObject *answer;
        if (total <= 0.0) {
            answer = Py_NewRef(Py_None);
        } else {
            double rank = q * (total - 1.0), cumulative = 0.0, value = pts[n - 1].v;
            for (Py_ssize_t i = 0; i < n; i++) {
                cumulative += pts[i].w;
                if (cumulative > rank) {
                    value = pts[i].v;
                    break;
                }
            }
            answer = PyFloat_FromDouble(value);
            if (!answer) goto error;
        }
        int ok = PyList_Append(answers, answer);
        Py_DECREF(answer);
        if (ok < 0) goto error;
    }
    if (PyErr_Occurred()) goto error;
    Py_DECREF(iter);
    PyMem_Free(f);
    PyMem_Free(pts);
    return answers;
error:
    Py_XDECREF(iter);
    Py_XDECREF(answers);
    PyMem_Free(f);
    PyMem_Free(pts);
    return NULL;
}

static PyObject *Sketch_quantile(SketchObject *self, PyObject *q) {
    PyObject *qs = PyTuple_Pack(1, q);
    if (!qs) return NULL;
    PyObject *answers = Sketch_quantiles(self, qs);
    Py_DECREF(qs);
    if (!answers) return NULL;
    PyObject *answer = Py_NewRef(PyList_GET_ITEM(answers, 0));
    Py_DECREF(answers);
    return answer;
}

static PyObject *Sketch_count_le(SketchObject *self, PyObject *bounds) {
    Point *pts;
    Py_ssize_t n = ordered(self, &pts);
    if (n < 0) return NULL;
    PyObject *iter = NULL, *answers = NULL, *item;
    Fsum *f = PyMem_Malloc(sizeof(Fsum));
    if (!f) {
        PyErr_NoMemory();
        goto error;
    }
    iter = PyObject_GetIter(bounds);
    if (!iter) goto error;
    answers = PyList_New(0);
    if (!answers) goto error;
    while ((item = PyIter_Next(iter))) {
        double bound;
        int rc = as_double(item, &bound);
        Py_DECREF(item);
        if (rc < 0) goto error;
        fsum_init(f);
        for (Py_ssize_t i = 0; i < n; i++)
            if (pts[i].v <= bound) fsum_add(f, pts[i].w);
        PyObject *answer = PyFloat_FromDouble(fsum_result(f));
        if (!answer) goto error;
        int ok = PyList_Append(answers, answer);
        Py_DECREF(answer);
        if (ok < 0) goto error;
    }
    if (PyErr_Occurred()) goto error;
    Py_DECREF(iter);
    PyMem_Free(f);
    PyMem_Free(pts);
    return answers;
error:
    Py_XDECREF(iter);
    Py_XDECREF(answers);
    PyMem_Free(f);
    PyMem_Free(pts);
    return NULL;
}

static PyObject *Sketch_get_count(SketchObject *self, void *Py_UNUSED(closure)) {
    return PyFloat_FromDouble(self->zero + store_sum(&self->pos) + store_sum(&self->neg));
}

static PyObject *Sketch_get_alpha_bp(SketchObject *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->alpha_bp);
}

static PyObject *Sketch_get_alpha(SketchObject *self, void *Py_UNUSED(closure)) {
    return PyFloat_FromDouble(self->alpha_bp / 10000.0);
}

static int Sketch_bool(SketchObject *self) {
    return self->zero != 0.0 || self->pos.n > 0 || self->neg.n > 0;
}

/* The store's bins (a log's n counts its entries, some of which may share a key). */
static Py_ssize_t store_bins(const Store *s) {
    Bin bins[LOG_MAX];
    return s->w ? s->n : store_snapshot(s, bins);
}

static PyObject *Sketch_repr(SketchObject *self) {
    PyObject *count = Sketch_get_count(self, NULL);
    if (!count) return NULL;
    PyObject *out = PyUnicode_FromFormat("<Sketch alpha_bp=%d count=%R bins=%zd>", self->alpha_bp,
                                         count, store_bins(&self->pos) + store_bins(&self->neg));
    Py_DECREF(count);
    return out;
}

static PyMethodDef Sketch_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Sketch_add, METH_FASTCALL | METH_KEYWORDS,
     "add(value, weight=1.0): a finite value; a weight > 0 (1/rate)."},
    {"merge", (PyCFunction)Sketch_merge, METH_O, "Add another Sketch's bins to this one."},
    {"merge_bytes", (PyCFunction)Sketch_merge_bytes, METH_O,
     "merge(Sketch.from_bytes(data)) without building the other sketch (ValueError on bad bytes)."},
    {"to_bytes", (PyCFunction)Sketch_to_bytes, METH_NOARGS, "The stored form (sketch.py)."},
    {"from_bytes", (PyCFunction)Sketch_from_bytes, METH_O | METH_CLASS,
     "The sketch of bytes written by to_bytes (ValueError on bad bytes)."},
    {"quantile", (PyCFunction)Sketch_quantile, METH_O,
     "The value at quantile q (0..1) within alpha, or None when empty."},
    {"quantiles", (PyCFunction)Sketch_quantiles, METH_O, "quantile of each q."},
    {"count_le", (PyCFunction)Sketch_count_le, METH_O,
     "For each bound, the weight of the samples at most that bound."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Sketch_getset[] = {
    {"count", (getter)Sketch_get_count, NULL, "The total weight.", NULL},
    {"alpha_bp", (getter)Sketch_get_alpha_bp, NULL, "alpha in basis points.", NULL},
    {"alpha", (getter)Sketch_get_alpha, NULL, "The relative error bound.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyNumberMethods Sketch_as_number = {
    .nb_bool = (inquiry)Sketch_bool,
};

static PyTypeObject SketchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocol._sketch.Sketch",
    .tp_doc = "A DDSketch of weighted values: protocol/sketch.py's PySketch in C.",
    .tp_basicsize = sizeof(SketchObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Sketch_new,
    .tp_dealloc = (destructor)Sketch_dealloc,
    .tp_repr = (reprfunc)Sketch_repr,
    .tp_methods = Sketch_methods,
    .tp_getset = Sketch_getset,
    .tp_as_number = &Sketch_as_number,
};

/* ------------------------------------------------------------ the C API */

static PyObject *capi_new_sketch(int alpha_bp) {
    if (alpha_bp < MIN_ALPHA_BP || alpha_bp > MAX_ALPHA_BP) {
        fail("alpha must be 1..1000 basis points");
        return NULL;
    }
    SketchObject *self = (SketchObject *)SketchType.tp_alloc(&SketchType, 0);
    if (!self) return NULL;
    sketch_init_fields(self, alpha_bp);
    return (PyObject *)self;
}

static int capi_add(PyObject *sketch, double value, double weight) {
    if (!PyObject_TypeCheck(sketch, &SketchType)) {
        PyErr_SetString(PyExc_TypeError, "not a protocol._sketch.Sketch");
        return -1;
    }
    /* The caller has checked the sample (the parser rejects non-finite values and rates
     * outside [1e-6, 1]); the check here costs two comparisons and keeps the sketch
     * finite whatever a caller does. */
    if (check_sample(value, weight) < 0) return -1;
    int err = 0;
    sketch_add_value((SketchObject *)sketch, value, weight, &err);
    return err;
}

#define ADD_MANY_CHUNK 64

/* n capi_add calls, in order. Each chunk is gone through twice: first every sample is
 * checked and its key found, with a prefetch of its weight's slot where the store
 * already addresses the key (the common case: a key outside the window moves the array
 * anyway); then the adds, in the samples' order, by store_add, so the weights are
 * those of capi_add. A sample that fails the checks ends the chunk's first pass: the
 * samples before it are added, then capi_add on it sets the error. */
static int capi_add_many(const GfSketchSample *samples, Py_ssize_t n) {
    int64_t keys[ADD_MANY_CHUNK];
    Store *stores[ADD_MANY_CHUNK];
    for (Py_ssize_t start = 0; start < n; start += ADD_MANY_CHUNK) {
        Py_ssize_t end = n - start < ADD_MANY_CHUNK ? n : start + ADD_MANY_CHUNK, i;
        for (i = start; i < end; i++) /* the sketches, whose stores say where bins are */
            __builtin_prefetch(samples[i].sketch, 1); /* a positive value's line (Store) */
        for (i = start; i < end; i++) {
            const GfSketchSample *s = &samples[i];
            /* capi_add's checks, so that capi_add on a sample that fails them fails */
            if (!PyObject_TypeCheck(s->sketch, &SketchType) || !isfinite(s->value) ||
                !valid_weight(s->weight))
                break;
            int64_t key = 0;
            Store *store = value_store((SketchObject *)s->sketch, s->value, &key);
            if (store && store->w && key >= store->base && key < store->base + store->cap)
                __builtin_prefetch(&store->w[key - store->base], 1);
            else if (store && store->n < store->spcap)
                __builtin_prefetch(&store->sp[store->n], 1); /* where the entry goes */
            stores[i - start] = store;
            keys[i - start] = key;
        }
        Py_ssize_t checked = i;
        for (i = start; i < checked; i++) {
            Store *store = stores[i - start];
            if (!store)
                ((SketchObject *)samples[i].sketch)->zero += samples[i].weight;
            else if (store_add(store, keys[i - start], samples[i].weight) < 0)
                return -1;
        }
        if (checked < end) return capi_add(samples[checked].sketch, samples[checked].value,
                                           samples[checked].weight);
    }
    return 0;
}

static GfSketchCAPI capi = {&SketchType, capi_new_sketch, capi_add, capi_add_many};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "protocol._sketch", "DDSketch in C (protocol/sketch.py).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sketch(void) {
    if (PyType_Ready(&SketchType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *capsule = PyCapsule_New(&capi, GF_SKETCH_CAPSULE, NULL);
    if (!capsule || PyModule_AddObjectRef(m, "Sketch", (PyObject *)&SketchType) < 0 ||
        PyModule_AddObject(m, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
