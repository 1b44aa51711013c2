/* The C API of protocol._sketch (protocol/_sketch.c) for other extensions: the
 * collector's C pass (collector/_fastfeed.c) adds each value line's sample to its
 * metric-minute's sketch without a Python call.
 *
 *   GfSketchCAPI *api = PyCapsule_Import(GF_SKETCH_CAPSULE, 0);
 *   PyObject *s = api->new_sketch(100);          // alpha 1%
 *   if (api->add(s, 12.5, 1.0) < 0) ...          // -1: exception set (memory)
 *   if (api->add_many(samples, n) < 0) ...       // the same, n samples in order
 *
 * add_many is what a caller with many live sketches uses: it finds every sample's bin
 * first and prefetches it, then adds them in order, so the cache misses of n samples
 * (one per sample when thousands of sketches are live) overlap instead of queueing.
 * The result is that of n add calls, bit for bit; on an error it stops at the sample
 * that failed (those before it are added).
 *
 * Bins and bytes are those of protocol/sketch.py, the reference. The caller checks
 * its samples first (a finite value; a weight, 1/rate, in (0, 2**100]); add checks
 * them again all the same and sets ValueError (SketchError) on one that is not, as it
 * sets TypeError on an object that is not a protocol._sketch.Sketch.
 */
#ifndef GF_SKETCH_CAPI_H
#define GF_SKETCH_CAPI_H
#include <Python.h>

#define GF_SKETCH_CAPSULE "protocol._sketch._C_API"

typedef struct {
    PyObject *sketch; /* borrowed: the caller keeps it alive */
    double value, weight;
} GfSketchSample;

typedef struct {
    PyTypeObject *type;                                         /* protocol._sketch.Sketch */
    PyObject *(*new_sketch)(int alpha_bp);                      /* NULL + exception on error */
    int (*add)(PyObject *sketch, double value, double weight);  /* 0, or -1 + exception */
    int (*add_many)(const GfSketchSample *samples, Py_ssize_t n); /* 0, or -1 + exception */
} GfSketchCAPI;

#endif
