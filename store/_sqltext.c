/* store._sqltext: the text of MySQL's multi-row point upserts, in C.

   A flush sends its points to MariaDB as INSERT ... VALUES (id,ts,cnt,sum,mn,mx),...
   text (aiomysql has no binary protocol). Python's repr of a double (store/mysql.py's
   python_upsert_statement, the reference and the fallback) costs ~0.75 us for a
   timer's value here, and a flush of 20,000 series writes ~5 rows of 4 doubles per
   series and batch: the text was a third of the daemon's CPU per flushed metric-second.

   Here each double is written in the first of three forms that reads back as the
   same double (write_double): an integer, a decimal with at most 9 decimals, or
   %.17g. The doubles are copied out of the rows with the GIL held and formatted
   without it, so a statement built in a worker thread runs beside the event loop. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    long long id, ts;
    double values[4];
} Row;

/* %.17g follows the thread's LC_NUMERIC, and SQL wants a '.' whatever a library may
   have set: the text is formatted in the C locale (uselocale is per thread). */
static locale_t c_numeric;

#define ROW_FIELDS 6
/* "(" + two int64 + four doubles of at most 24 characters + ",", ")," */
#define ROW_TEXT_MAX (2 + 2 * 21 + 4 * 25 + 6)
#define EXACT_INTEGER 9007199254740992.0 /* 2**53 */

static int copy_int(PyObject *item, long long *out) {
    if (!PyLong_Check(item)) {
        PyErr_Format(PyExc_TypeError, "a metric id and ts are ints, not %.50s",
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    *out = PyLong_AsLongLong(item);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int copy_double(PyObject *item, double *out) {
    if (PyFloat_CheckExact(item)) {
        *out = PyFloat_AS_DOUBLE(item);
    } else if (PyLong_Check(item) || PyFloat_Check(item)) {
        *out = PyFloat_AsDouble(item); /* correctly rounded, as MariaDB would read it */
        if (*out == -1.0 && PyErr_Occurred()) return -1;
    } else {
        PyErr_Format(PyExc_TypeError, "a point's values are floats, not %.50s",
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    if (!isfinite(*out)) { /* never stored (see store.rollups): SQL has no literal for it */
        PyErr_SetString(PyExc_ValueError, "a point's values are finite");
        return -1;
    }
    return 0;
}

/* An integer's decimal digits at ``at`` (sprintf's "%lld", several times quicker). */
static char *write_int(char *at, long long value) {
    char digits[24];
    int len = 0;
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value
                                             : (unsigned long long)value;
    do {
        digits[len++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0) *at++ = '-';
    while (len) *at++ = digits[--len];
    return at;
}

static const double POW10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
#define MAX_DECIMALS 9

/* n / 10**decimals as decimal text, n an integer below 2**53 in magnitude. */
static char *write_decimal(char *at, long long n, int decimals) {
    char digits[24];
    int len = (int)(write_int(digits, n < 0 ? -n : n) - digits);
    if (n < 0) *at++ = '-';
    if (decimals == 0) {
        memcpy(at, digits, (size_t)len);
        return at + len;
    }
    int whole = len - decimals;
    if (whole <= 0) {
        *at++ = '0';
        *at++ = '.';
        memset(at, '0', (size_t)-whole);
        at += -whole;
        memcpy(at, digits, (size_t)len);
        return at + len;
    }
    memcpy(at, digits, (size_t)whole);
    at += whole;
    *at++ = '.';
    memcpy(at, digits + whole, (size_t)decimals);
    return at + decimals;
}

/* A double as text that reads back as the same double. Most of a flush's values are
   integers or have few decimals (counts, StatsD's %0.6f timers, %0.2f gauges): the
   first ``decimals`` for which the double is n / 10**decimals, to the nearest double
   (IEEE division rounds correctly, as MariaDB's reading of the text does, so the
   text n / 10**decimals reads back as this double), is written with integer
   arithmetic. Any other double as %.17g (~0.3 us: 17 significant digits identify every
   double). -0.0 keeps its sign. */
static char *write_double(char *at, double value) {
    if (!(value == 0.0 && signbit(value))) {
        for (int decimals = 0; decimals <= MAX_DECIMALS; decimals++) {
            double scaled = value * POW10[decimals];
            if (!(fabs(scaled) < EXACT_INTEGER)) break;
            double n = nearbyint(scaled);
            if (n / POW10[decimals] == value) return write_decimal(at, (long long)n, decimals);
        }
    }
    return at + sprintf(at, "%.17g", value);
}

static PyObject *statement(PyObject *Py_UNUSED(module), PyObject *args) {
    const char *head, *tail;
    Py_ssize_t head_len, tail_len;
    PyObject *rows;
    if (!PyArg_ParseTuple(args, "s#O!s#:statement", &head, &head_len, &PyList_Type, &rows,
                          &tail, &tail_len)) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(rows);
    Row *copied = PyMem_RawMalloc((size_t)(count ? count : 1) * sizeof(Row));
    if (copied == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != ROW_FIELDS) {
            PyErr_SetString(PyExc_TypeError,
                            "a row is a tuple (metric_id, ts, cnt, sum, mn, mx)");
            goto fail;
        }
        if (copy_int(PyTuple_GET_ITEM(row, 0), &copied[i].id) < 0 ||
            copy_int(PyTuple_GET_ITEM(row, 1), &copied[i].ts) < 0) {
            goto fail;
        }
        for (int v = 0; v < 4; v++) {
            if (copy_double(PyTuple_GET_ITEM(row, 2 + v), &copied[i].values[v]) < 0) goto fail;
        }
    }
    size_t capacity = (size_t)head_len + (size_t)tail_len + (size_t)count * ROW_TEXT_MAX + 1;
    char *text = PyMem_RawMalloc(capacity);
    if (text == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    char *at = text;
    Py_BEGIN_ALLOW_THREADS
    locale_t previous = uselocale(c_numeric);
    memcpy(at, head, (size_t)head_len);
    at += head_len;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i) *at++ = ',';
        *at++ = '(';
        at = write_int(at, copied[i].id);
        *at++ = ',';
        at = write_int(at, copied[i].ts);
        for (int v = 0; v < 4; v++) {
            *at++ = ',';
            at = write_double(at, copied[i].values[v]);
        }
        *at++ = ')';
    }
    memcpy(at, tail, (size_t)tail_len);
    at += tail_len;
    uselocale(previous);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(copied);
    PyObject *result = PyUnicode_DecodeASCII(text, at - text, NULL);
    PyMem_RawFree(text);
    return result;
fail:
    PyMem_RawFree(copied);
    return NULL;
}

static PyMethodDef methods[] = {
    {"statement", statement, METH_VARARGS,
     "statement(head, rows, tail) -> head + '(id,ts,cnt,sum,mn,mx),...' + tail: each "
     "double as text that reads back as the same double."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "store._sqltext",
    "The text of MySQL's multi-row point upserts, in C (store/mysql.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__sqltext(void) {
    if (c_numeric == (locale_t)0) {
        c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        if (c_numeric == (locale_t)0) return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyModule_Create(&module);
}
