/* Optional accelerator for collector.aggregator.Aggregator.feed (pure-Python fallback).
 *
 * feed_fast(data, pos, known, tails, table, max_len, capacity) -> (pos, added, created)
 *
 * Aggregates, from byte offset ``pos`` on, the lines the Python fast path has already
 * learnt everything about: the head (bytes before ":") is in ``known`` -> (name, kind)
 * and the rest of the line in ``tails`` -> (value, kind) with the same kind, into
 * ``table`` (name -> [cnt, sum, mn, mx, kind]: the aggregator's table of this second).
 * It creates at most ``capacity`` new buckets (what --max-pending-buckets leaves) and
 * returns how many it created, so Python keeps its pending count exact. It stops at
 * the first line it does not fully handle and returns that line's offset, so the
 * Python code handles that line (and owns every rule: validation, caps, conflicts,
 * learning new heads and tails) before calling back; ``pos == len(data)`` means done.
 * It never parses a number or a name itself: it cannot disagree with the Python parser.
 * An error (out of memory only: the keys are str and bytes) propagates; the buckets
 * this call created before it are then uncounted until the next take() resets the count.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

static int add_to(PyObject *bucket, PyObject *value, double v) {
    /* bucket = [cnt, sum, mn, mx, kind]; the same float arithmetic as the Python path. */
    PyObject *cnt = PyList_GET_ITEM(bucket, 0), *sum = PyList_GET_ITEM(bucket, 1);
    PyObject *mn = PyList_GET_ITEM(bucket, 2), *mx = PyList_GET_ITEM(bucket, 3);
    if (!PyFloat_CheckExact(cnt) || !PyFloat_CheckExact(sum) || !PyFloat_CheckExact(mn) ||
        !PyFloat_CheckExact(mx))
        return 0;
    double total = PyFloat_AS_DOUBLE(sum) + v;
    if (!isfinite(total)) return 0; /* protocol.buckets.is_finite_bucket: Python drops it */
    PyObject *new_cnt = PyFloat_FromDouble(PyFloat_AS_DOUBLE(cnt) + 1.0);
    if (!new_cnt) return -1;
    PyObject *new_sum = PyFloat_FromDouble(total);
    if (!new_sum) {
        Py_DECREF(new_cnt);
        return -1;
    }
    PyList_SET_ITEM(bucket, 0, new_cnt);
    Py_DECREF(cnt);
    PyList_SET_ITEM(bucket, 1, new_sum);
    Py_DECREF(sum);
    if (v < PyFloat_AS_DOUBLE(mn)) {
        Py_INCREF(value);
        PyList_SET_ITEM(bucket, 2, value);
        Py_DECREF(mn);
    } else if (v > PyFloat_AS_DOUBLE(mx)) {
        Py_INCREF(value);
        PyList_SET_ITEM(bucket, 3, value);
        Py_DECREF(mx);
    }
    return 1;
}

static PyObject *feed_fast(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "feed_fast takes 7 arguments");
        return NULL;
    }
    PyObject *data = args[0], *known = args[2], *tails = args[3], *table = args[4];
    if (!PyBytes_CheckExact(data) || !PyDict_CheckExact(known) || !PyDict_CheckExact(tails) ||
        !PyDict_CheckExact(table)) {
        PyErr_SetString(PyExc_TypeError, "feed_fast: bytes and dicts expected");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_len = PyLong_AsSsize_t(args[5]);
    Py_ssize_t capacity = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred()) return NULL;
    const char *base = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Py_ssize_t added = 0, created = 0;
    if (pos < 0) pos = 0;
    while (pos < size) {
        const char *p = base + pos;
        const char *nl = memchr(p, '\n', (size_t)(size - pos));
        Py_ssize_t len = nl ? nl - p : size - pos;
        Py_ssize_t next = pos + len + 1;
        if (len == 0) {
            pos = next;
            continue;
        }
        if (len > max_len) break;
        const char *colon = memchr(p, ':', (size_t)len);
        if (!colon) break;
        PyObject *head = PyBytes_FromStringAndSize(p, colon - p);
        if (!head) return NULL;
        PyObject *entry = PyDict_GetItemWithError(known, head); /* borrowed */
        Py_DECREF(head);
        if (!entry) {
            if (PyErr_Occurred()) return NULL;
            break;
        }
        PyObject *rest = PyBytes_FromStringAndSize(colon + 1, len - (colon + 1 - p));
        if (!rest) return NULL;
        PyObject *tail = PyDict_GetItemWithError(tails, rest); /* borrowed */
        Py_DECREF(rest);
        if (!tail) {
            if (PyErr_Occurred()) return NULL;
            break;
        }
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2 ||
            !PyTuple_CheckExact(tail) || PyTuple_GET_SIZE(tail) != 2)
            break;
        PyObject *name = PyTuple_GET_ITEM(entry, 0), *kind = PyTuple_GET_ITEM(entry, 1);
        PyObject *value = PyTuple_GET_ITEM(tail, 0), *tail_kind = PyTuple_GET_ITEM(tail, 1);
        if (tail_kind != kind) {
            int same = PyObject_RichCompareBool(tail_kind, kind, Py_EQ);
            if (same < 0) return NULL;
            if (!same) break; /* a kind conflict: Python counts it */
        }
        if (!PyFloat_CheckExact(value)) break;
        double v = PyFloat_AS_DOUBLE(value);
        PyObject *bucket = PyDict_GetItemWithError(table, name); /* borrowed */
        if (!bucket) {
            if (PyErr_Occurred()) return NULL;
            if (created >= capacity) break; /* over --max-pending-buckets: Python counts it */
            PyObject *one = PyFloat_FromDouble(1.0);
            PyObject *fresh = PyList_New(5);
            if (!one || !fresh) {
                Py_XDECREF(one);
                Py_XDECREF(fresh);
                return NULL;
            }
            PyList_SET_ITEM(fresh, 0, one);
            Py_INCREF(value);
            PyList_SET_ITEM(fresh, 1, value);
            Py_INCREF(value);
            PyList_SET_ITEM(fresh, 2, value);
            Py_INCREF(value);
            PyList_SET_ITEM(fresh, 3, value);
            Py_INCREF(kind);
            PyList_SET_ITEM(fresh, 4, kind);
            int failed = PyDict_SetItem(table, name, fresh) < 0;
            Py_DECREF(fresh);
            if (failed) return NULL;
            created++;
            added++;
            pos = next;
            continue;
        }
        if (!PyList_CheckExact(bucket) || PyList_GET_SIZE(bucket) != 5) break;
        int done = add_to(bucket, value, v);
        if (done < 0) return NULL;
        if (done == 0) break; /* not the floats we expect: Python handles it */
        added++;
        pos = next;
    }
    if (pos > size) pos = size;
    return Py_BuildValue("(nnn)", pos, added, created);
}

static PyMethodDef methods[] = {
    {"feed_fast", (PyCFunction)(void (*)(void))feed_fast, METH_FASTCALL,
     "Aggregate the lines of known heads and tails; see collector/_fastfeed.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector._fastfeed", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastfeed(void) { return PyModule_Create(&module); }
