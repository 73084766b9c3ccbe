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

/* prepare(sym i32[n], idx i32[n], num_tables, columns, base, by_symbol, offsets_minus_one i64[num_tables],
 *         start_flags u32[num_tables * columns], freq u32[...], cost16 u16[...],
 *         start_out u32[n], freq_out u32[n], escapes_out i64[n]) -> (status, bits16, number of escapes, position).
 * The encoder's per-symbol operands from the per-(table, column) arrays of rans._NumpyEncoderTables, in one
 * pass: column = symbol - base (by_symbol) or symbol - offsets_minus_one[table] (the value + 1), clamped to
 * [0, columns); start (flags removed), frequency, the ideal size in 1/16 bit, and the positions of escaped
 * symbols. status 0: done; 1: the symbol at `position` has zero probability; 2: its table index is out of range. */
#define FLAG_SHIFT 20
static PyObject *rans_prepare(PyObject *self, PyObject *args) {
    Py_buffer sym_b, idx_b, omo_b, sf_b, fq_b, cost_b, so_b, fo_b, esc_b;
    Py_ssize_t num_tables, columns;
    long long base;
    int by_symbol;
    if (!PyArg_ParseTuple(args, "y*y*nnLpy*y*y*y*w*w*w*", &sym_b, &idx_b, &num_tables, &columns, &base, &by_symbol,
                          &omo_b, &sf_b, &fq_b, &cost_b, &so_b, &fo_b, &esc_b))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = sym_b.len / 4;
    if (sym_b.len % 4 || idx_b.len != sym_b.len || num_tables < 1 || columns < 1) {
        PyErr_SetString(PyExc_ValueError, "_rans.prepare: inconsistent sizes");
        goto done;
    }
    if (check_size(&omo_b, num_tables, 8, "offsets_minus_one") || check_size(&sf_b, num_tables * columns, 4, "start") ||
        check_size(&fq_b, num_tables * columns, 4, "freq") || check_size(&cost_b, num_tables * columns, 2, "cost16") ||
        check_size(&so_b, n, 4, "start_out") || check_size(&fo_b, n, 4, "freq_out") ||
        check_size(&esc_b, n, 8, "escapes_out"))
        goto done;
    {
        const int32_t *sym = (const int32_t *)sym_b.buf;
        const int32_t *idx = (const int32_t *)idx_b.buf;
        const int64_t *omo = (const int64_t *)omo_b.buf;
        const uint32_t *start_flags = (const uint32_t *)sf_b.buf;
        const uint32_t *freq = (const uint32_t *)fq_b.buf;
        const uint16_t *cost16 = (const uint16_t *)cost_b.buf;
        uint32_t *start_out = (uint32_t *)so_b.buf, *freq_out = (uint32_t *)fo_b.buf;
        int64_t *escapes = (int64_t *)esc_b.buf;
        int status = 0;
        Py_ssize_t num_escapes = 0, position = -1;
        long long bits16 = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t t = idx[i];
            if (t < 0 || t >= num_tables) { status = 2; position = i; break; }
            int64_t col = (int64_t)sym[i] - (by_symbol ? (int64_t)base : omo[t]);
            col = col < 0 ? 0 : (col >= columns ? columns - 1 : col);
            Py_ssize_t flat = (Py_ssize_t)(t * columns + col);
            uint32_t sf = start_flags[flat];
            if (sf >> FLAG_SHIFT) {
                if (sf & (2u << FLAG_SHIFT)) { status = 1; position = i; break; }
                escapes[num_escapes++] = i;
            }
            start_out[i] = sf & ((1u << FLAG_SHIFT) - 1);
            freq_out[i] = freq[flat];
            bits16 += cost16[flat];
        }
        Py_END_ALLOW_THREADS
        result = Py_BuildValue("iLnn", status, bits16, num_escapes, position);
    }
done:
    PyBuffer_Release(&sym_b);
    PyBuffer_Release(&idx_b);
    PyBuffer_Release(&omo_b);
    PyBuffer_Release(&sf_b);
    PyBuffer_Release(&fq_b);
    PyBuffer_Release(&cost_b);
    PyBuffer_Release(&so_b);
    PyBuffer_Release(&fo_b);
    PyBuffer_Release(&esc_b);
    return result;
}

/* decode(states i64[lanes], idx i32[n], num_tables, bins_per_table, coarse u16[num_tables << COARSE_BITS],
 *        bin_table u32[2 * num_bins] (start, freq of every flat bin), offsets i64[num_tables],
 *        max_values i64[num_tables], words (little-endian u16 bytes), symbols_out i32[n],
 *        escapes_out i64[n]) -> (status, number of escapes).
 * symbols_out gets every symbol coded with its bin (bin + the table's offset); the positions of the
 * symbols coded with their table's escape bin go to escapes_out, in order (the caller fills them in
 * from the escape section).
 * coarse[t][j] is the table-local bin that holds slot j << (16 - COARSE_BITS); the bin of a slot is found
 * from there by stepping over the bins that end at or before it (zero-frequency bins end where they start),
 * which gives exactly the bin with start <= slot < start + freq: the bin the exact slot table gives.
 * The coarse table (2 KiB per table) and the bins stay in cache, unlike a 256 KiB-per-table slot table.
 * status 0: decoded, every word consumed and every lane back at the initial state; 1: a read past the
 * words; 2: words left over or a lane not back at the initial state; 3: a table index out of range;
 * 4: a symbol outside int32 (no valid stream holds one: the encoder refuses them). */
#define COARSE_BITS 10
static PyObject *rans_decode(PyObject *self, PyObject *args) {
    Py_buffer states_b, idx_b, coarse_b, bin_b, off_b, max_b, words_b, sym_b, esc_b;
    Py_ssize_t num_tables, width;
    if (!PyArg_ParseTuple(args, "y*y*nny*y*y*y*y*w*w*", &states_b, &idx_b, &num_tables, &width, &coarse_b, &bin_b,
                          &off_b, &max_b, &words_b, &sym_b, &esc_b))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t lanes = states_b.len / 8, n = idx_b.len / 4;
    Py_ssize_t num_words = words_b.len / 2;
    if (states_b.len % 8 || idx_b.len % 4 || lanes < 1 || lanes > n || num_tables < 1 || width < 1 ||
        width > 65536 || words_b.len % 2) {
        PyErr_SetString(PyExc_ValueError, "_rans.decode: inconsistent sizes");
        goto done;
    }
    if (check_size(&coarse_b, num_tables << COARSE_BITS, 2, "coarse") ||
        check_size(&bin_b, 2 * num_tables * width, 4, "bin_table") || check_size(&off_b, num_tables, 8, "offsets") ||
        check_size(&max_b, num_tables, 8, "max_values") || check_size(&sym_b, n, 4, "symbols") ||
        check_size(&esc_b, n, 8, "escapes"))
        goto done;
    {
        const int64_t *states = (const int64_t *)states_b.buf;
        const int32_t *idx = (const int32_t *)idx_b.buf;
        const int64_t *offsets = (const int64_t *)off_b.buf;
        const int64_t *max_values = (const int64_t *)max_b.buf;
        int64_t *escapes = (int64_t *)esc_b.buf;
        Py_ssize_t num_escapes = 0;
        const uint16_t *coarse = (const uint16_t *)coarse_b.buf;
        const uint32_t *bin_table = (const uint32_t *)bin_b.buf;
        const uint8_t *wb = (const uint8_t *)words_b.buf;
        int32_t *symbols = (int32_t *)sym_b.buf;
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
            uint64_t t = (uint64_t)(int64_t)idx[i];
            if (t >= (uint64_t)num_tables) { status = 3; break; }
            uint64_t s = x[k];
            uint32_t slot = (uint32_t)(s & WORD_MASK);
            Py_ssize_t row = (Py_ssize_t)t * width;
            Py_ssize_t local = coarse[(t << COARSE_BITS) | (slot >> (16 - COARSE_BITS))];
            /* Every row's last bin ends at 2**16 > slot, so this stays inside the row (checked anyway). */
            while (local < width && slot >= bin_table[2 * (row + local)] + bin_table[2 * (row + local) + 1]) local++;
            if (local >= width) { status = 3; break; }
            const uint32_t *sf = bin_table + 2 * (row + local);
            if (local == max_values[t]) {
                escapes[num_escapes++] = i;
                symbols[i] = 0;
            } else {
                int64_t v = offsets[t] + local;
                if (v < INT32_MIN || v > INT32_MAX) { status = 4; break; }
                symbols[i] = (int32_t)v;
            }
            /* slot - start is in [0, freq), so s stays in [1, 2**32). */
            s = (uint64_t)sf[1] * (s >> WORD_BITS) + slot - sf[0];
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
        result = Py_BuildValue("in", status, num_escapes);
    }
done:
    PyBuffer_Release(&states_b);
    PyBuffer_Release(&idx_b);
    PyBuffer_Release(&coarse_b);
    PyBuffer_Release(&bin_b);
    PyBuffer_Release(&off_b);
    PyBuffer_Release(&max_b);
    PyBuffer_Release(&words_b);
    PyBuffer_Release(&sym_b);
    PyBuffer_Release(&esc_b);
    return result;
}

static PyMethodDef methods[] = {
    {"prepare", rans_prepare, METH_VARARGS,
     "prepare(sym, idx, num_tables, columns, base, by_symbol, offsets_minus_one, start_flags, freq, cost16, "
     "start_out, freq_out, escapes_out) -> (status, bits16, number of escapes, position)"},
    {"encode", rans_encode, METH_VARARGS, "encode(start, freq, lanes, states_out, words_out) -> number of words"},
    {"decode", rans_decode, METH_VARARGS,
     "decode(states, idx, num_tables, bins_per_table, coarse, bin_table, offsets, max_values, words, symbols_out, "
     "escapes_out) -> (status, number of escapes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rans", "Compiled rANS step loops.", -1, methods};

PyMODINIT_FUNC PyInit__rans(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "COARSE_BITS", COARSE_BITS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
