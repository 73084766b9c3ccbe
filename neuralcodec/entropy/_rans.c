/*
 * Compiled CPU step loops of neuralcodec's interleaved rANS coder (neuralcodec/entropy/rans.py).
 *
 * Same arithmetic and the same stream order as the NumPy and torch loops there, so the same
 * bytes: 32-bit state in [2**16, 2**32), 16-bit words, 16-bit probabilities, symbol i in lane
 * i % lanes at step i / lanes, words stored by (step ascending, lane ascending).
 *
 * Plain CPython C API with the buffer protocol (no NumPy headers needed to build). Every
 * buffer's size is checked against what the loop will touch, and the decoder bounds-checks
 * every word read and every table index, so a corrupted stream gives a status code (turned
 * into BitstreamError by the caller), never an out-of-bounds access. Both loops release the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define STATE_LOWER ((uint64_t)1 << 16)
#define WORD_BITS 16
#define WORD_MASK 0xFFFFu
#define PROB_SCALE ((uint64_t)1 << 16)

static int check_size(Py_buffer *b, Py_ssize_t count, Py_ssize_t itemsize, const char *name) {
    if (b->len < count * itemsize) {
        PyErr_Format(PyExc_ValueError, "_rans: buffer %s too small (%zd bytes, need %zd)", name, b->len,
                     count * itemsize);
        return -1;
    }
    return 0;
}

/* encode(start u32[n], freq u32[n], lanes, states_out u32[lanes], words_out u16[n]) -> number of words.
 * The words go to the END of words_out (the caller slices words_out[n - count:]), in stream order. */
static PyObject *rans_encode(PyObject *self, PyObject *args) {
    Py_buffer start_b, freq_b, states_b, words_b;
    Py_ssize_t lanes;
    if (!PyArg_ParseTuple(args, "y*y*nw*w*", &start_b, &freq_b, &lanes, &states_b, &words_b)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = start_b.len / 4;
    if (start_b.len % 4 || freq_b.len != start_b.len || lanes < 1 || lanes > (n ? n : 1)) {
        PyErr_SetString(PyExc_ValueError, "_rans.encode: inconsistent sizes");
        goto done;
    }
    if (check_size(&states_b, lanes, 4, "states") || check_size(&words_b, n, 2, "words")) goto done;
    {
        const uint32_t *start = (const uint32_t *)start_b.buf;
        const uint32_t *freq = (const uint32_t *)freq_b.buf;
        uint32_t *x = (uint32_t *)states_b.buf;
        uint16_t *words = (uint16_t *)words_b.buf;
        Py_ssize_t w = n, bad = -1;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < lanes; k++) x[k] = (uint32_t)STATE_LOWER;
        /* Backwards over symbols = steps descending, lanes descending: the words, written
         * backwards from the end, come out in (step, lane) ascending order. */
        Py_ssize_t k = n ? (n - 1) % lanes : 0;
        for (Py_ssize_t i = n - 1; i >= 0; i--, k = k ? k - 1 : lanes - 1) {
            uint64_t s = x[k];
            uint64_t f = freq[i];
            if (f == 0 || f > PROB_SCALE) { bad = i; break; }
            if (s >= (f << WORD_BITS)) {
                words[--w] = (uint16_t)(s & WORD_MASK);
                s >>= WORD_BITS;
            }
            uint32_t s32 = (uint32_t)s, f32 = (uint32_t)f;
            uint32_t q = s32 / f32;
            x[k] = (uint32_t)(((uint64_t)q << WORD_BITS) + (s32 - q * f32) + start[i]);
        }
        Py_END_ALLOW_THREADS
        if (bad >= 0) {
            PyErr_Format(PyExc_ValueError, "_rans.encode: symbol %zd has an impossible frequency", bad);
            goto done;
        }
        result = PyLong_FromSsize_t(n - w);
    }
done:
    PyBuffer_Release(&start_b);
    PyBuffer_Release(&freq_b);
    PyBuffer_Release(&states_b);
    PyBuffer_Release(&words_b);
    return result;
}

/* decode(states i64[lanes], idx i64[n], num_tables, lut i32[num_tables * 65536], start i64[B], freq i64[B],
 *        words (little-endian u16 bytes), bins_out i32[n]) -> status.
 * status 0: decoded, every word consumed and every lane back at the initial state; 1: a read past the
 * words; 2: words left over or a lane not back at the initial state; 3: a table index out of range. */
static PyObject *rans_decode(PyObject *self, PyObject *args) {
    Py_buffer states_b, idx_b, lut_b, start_b, freq_b, words_b, bins_b;
    Py_ssize_t num_tables;
    if (!PyArg_ParseTuple(args, "y*y*ny*y*y*y*w*", &states_b, &idx_b, &num_tables, &lut_b, &start_b, &freq_b,
                          &words_b, &bins_b))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t lanes = states_b.len / 8, n = idx_b.len / 8, num_bins = start_b.len / 8;
    Py_ssize_t num_words = words_b.len / 2;
    if (states_b.len % 8 || idx_b.len % 8 || lanes < 1 || lanes > n || num_tables < 1 ||
        freq_b.len != start_b.len || words_b.len % 2) {
        PyErr_SetString(PyExc_ValueError, "_rans.decode: inconsistent sizes");
        goto done;
    }
    if (check_size(&lut_b, num_tables * (Py_ssize_t)PROB_SCALE, 4, "lut") || check_size(&bins_b, n, 4, "bins"))
        goto done;
    {
        const int64_t *states = (const int64_t *)states_b.buf;
        const int64_t *idx = (const int64_t *)idx_b.buf;
        const int32_t *lut = (const int32_t *)lut_b.buf;
        const int64_t *start = (const int64_t *)start_b.buf;
        const int64_t *freq = (const int64_t *)freq_b.buf;
        const uint8_t *wb = (const uint8_t *)words_b.buf;
        int32_t *bins = (int32_t *)bins_b.buf;
        int status = 0;
        uint64_t *x = (uint64_t *)PyMem_Malloc(sizeof(uint64_t) * (size_t)lanes);
        if (!x) { PyErr_NoMemory(); goto done; }
        for (Py_ssize_t k = 0; k < lanes; k++) {
            if (states[k] < (int64_t)STATE_LOWER || states[k] >= ((int64_t)1 << 32)) status = 2;
            x[k] = (uint64_t)states[k];
        }
        Py_BEGIN_ALLOW_THREADS
        Py_ssize_t p = 0, k = 0;
        for (Py_ssize_t i = 0; i < n && !status; i++) {
            uint64_t t = (uint64_t)idx[i];
            if (t >= (uint64_t)num_tables) { status = 3; break; }
            uint64_t s = x[k];
            uint64_t slot = s & WORD_MASK;
            int32_t b = lut[t * PROB_SCALE + slot];
            if (b < 0 || b >= num_bins) { status = 3; break; }
            bins[i] = b;
            /* slot - start[b] is in [0, freq[b]), so s stays in [1, 2**32). */
            s = (uint64_t)freq[b] * (s >> WORD_BITS) + slot - (uint64_t)start[b];
            if (s < STATE_LOWER) {
                if (p >= num_words) { status = 1; break; }
                s = (s << WORD_BITS) | (uint64_t)wb[2 * p] | ((uint64_t)wb[2 * p + 1] << 8);
                p++;
            }
            x[k] = s;
            if (++k == lanes) k = 0;
        }
        if (!status) {
            if (p != num_words) status = 2;
            for (Py_ssize_t j = 0; j < lanes; j++)
                if (x[j] != STATE_LOWER) status = 2;
        }
        Py_END_ALLOW_THREADS
        PyMem_Free(x);
        result = PyLong_FromLong(status);
    }
done:
    PyBuffer_Release(&states_b);
    PyBuffer_Release(&idx_b);
    PyBuffer_Release(&lut_b);
    PyBuffer_Release(&start_b);
    PyBuffer_Release(&freq_b);
    PyBuffer_Release(&words_b);
    PyBuffer_Release(&bins_b);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", rans_encode, METH_VARARGS, "encode(start, freq, lanes, states_out, words_out) -> number of words"},
    {"decode", rans_decode, METH_VARARGS,
     "decode(states, idx, num_tables, lut, start, freq, words, bins_out) -> status (0: ok)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rans", "Compiled rANS step loops.", -1, methods};

PyMODINIT_FUNC PyInit__rans(void) { return PyModule_Create(&module); }
