#include "hotpath.hpp"

#include <pybind11/pybind11.h>

#include <chrono>
#include <memory>
#include <vector>

#include "drainer.hpp"

namespace py = pybind11;

namespace stepwire {
namespace {

struct ProducerObject {
    PyObject_HEAD
    std::shared_ptr<Stream>* stream;  // owned; null until __init__
    PyObject* ids;                    // dict: scalar series name -> id
    long long next_step;              // the step an auto-stepped call will use
    long long busy_ticks;             // time callers spent inside logging calls, in ticks()
    long long calls;                  // outermost logging calls begun
    long long outer_start;            // ticks() when the outermost logging call in progress began
    int depth;                        // logging calls in progress (nested ones are not counted twice)
    long long ticks_at_init;          // ticks() and steady-clock ns at __init__: their ratio converts ticks
    long long ns_at_init;
};

long long steady_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// A cheap monotonic counter for accounting the time of logging calls: the TSC on x86-64 (a few ns, where the
// steady clock costs ~20 ns and would add half again to log_scalar), the steady clock elsewhere.
long long ticks() noexcept {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    return static_cast<long long>(__builtin_ia32_rdtsc());
#else
    return steady_ns();
#endif
}

// Accounts the time of the outermost logging call on this producer (the GIL serialises the counters).
class Busy {
public:
    explicit Busy(ProducerObject* self) noexcept : self_(self) {
        if (self_->depth++ == 0) {
            self_->outer_start = ticks();
            ++self_->calls;
        }
    }
    ~Busy() {
        if (--self_->depth == 0) self_->busy_ticks += ticks() - self_->outer_start;
    }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;

private:
    ProducerObject* self_;
};

PyObject* str_log_slow;
PyObject* str_log_scalar_slow;

// Returns false with RuntimeError set once the run is finished.
bool push(Stream& stream, const Record& r) {
    const PushResult res = stream.try_push(r);
    if (res == PushResult::Ok) [[likely]] return true;
    bool ok = res != PushResult::Closed;
    if (ok && stream.drop_when_full()) {
        stream.count_dropped();
        return true;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS ok = stream.push_blocking(r);
        Py_END_ALLOW_THREADS
    }
    if (!ok) PyErr_SetString(PyExc_RuntimeError, "the run is finished: nothing more can be logged to it");
    return ok;
}

// The slow path of a dict's records that did not fit at once: the whole call waits for room (block policy) or is
// dropped whole (drop policy), so that a reader of the ring sees all of it or none. Only a call of more
// records than a ring holds goes in pieces. Returns false with RuntimeError set once the run is finished.
bool push_all(Stream& stream, PushResult res, const std::vector<Record>& records) {
    bool ok = res != PushResult::Closed;
    const std::size_t n = records.size();
    if (ok && n > stream.ring_capacity()) {
        const std::size_t pushed = stream.try_push_many(records.data(), n);
        for (std::size_t i = pushed; i < n; ++i) {
            if (!push(stream, records[i])) return false;
        }
        return true;
    }
    if (ok && stream.drop_when_full()) {
        stream.count_dropped(n);
        return true;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS ok = stream.push_blocking_all(records.data(), n);
        Py_END_ALLOW_THREADS
    }
    if (!ok) PyErr_SetString(PyExc_RuntimeError, "the run is finished: nothing more can be logged to it");
    return ok;
}

// Resolves the step argument: None -> the auto counter. Returns false with an exception set.
bool resolve_step(ProducerObject* self, PyObject* step, long long* out, bool advance = true) {
    long long s;
    if (step == nullptr || step == Py_None) {
        s = self->next_step;
        if (s > kMaxStep) {
            PyErr_Format(PyExc_OverflowError, "the step counter is past the largest step %lld: pass step=",
                         kMaxStep);
            return false;
        }
    } else {
        if (PyLong_CheckExact(step)) {
            s = PyLong_AsLongLong(step);
        } else if (PyIndex_Check(step) && !PyBool_Check(step)) {
            PyObject* idx = PyNumber_Index(step);
            if (idx == nullptr) return false;
            s = PyLong_AsLongLong(idx);
            Py_DECREF(idx);
        } else {
            PyErr_Format(PyExc_TypeError, "step must be an int, got %.100s", Py_TYPE(step)->tp_name);
            return false;
        }
        if (s == -1 && PyErr_Occurred()) return false;
        if (s < 0 || s > kMaxStep) {
            PyErr_Format(PyExc_ValueError, "step must be between 0 and %lld, got %lld", kMaxStep, s);
            return false;
        }
    }
    *out = s;
    if (advance && s >= self->next_step) self->next_step = s + 1;
    return true;
}

// Fast conversion of exact floats and ints; anything else takes the Python slow path.
bool fast_value(PyObject* v, double* out) {
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return true;
    }
    if (PyLong_CheckExact(v)) {
        *out = PyLong_AsDouble(v);
        if (*out == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return false;
        }
        return true;
    }
    return false;
}

bool lookup_id(ProducerObject* self, PyObject* name, std::uint32_t* id) {
    if (!PyUnicode_CheckExact(name)) return false;
    PyObject* v = PyDict_GetItemWithError(self->ids, name);
    if (v == nullptr) {
        PyErr_Clear();
        return false;
    }
    *id = static_cast<std::uint32_t>(PyLong_AsUnsignedLong(v));
    return true;
}

bool ready(ProducerObject* self) {
    if (self->stream != nullptr) return true;
    PyErr_SetString(PyExc_RuntimeError, "Producer.__init__ was not called");
    return false;
}

// Parses (args, kwnames) against positional-or-keyword names; missing optionals stay null.
bool parse(const char* fn, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, const char* const* names,
           int required, int total, PyObject** out) {
    for (int i = 0; i < total; ++i) out[i] = nullptr;
    if (nargs > total) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fn, total, nargs);
        return false;
    }
    for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; ++j) {
        PyObject* key = PyTuple_GET_ITEM(kwnames, j);
        int slot = -1;
        for (int i = 0; i < total; ++i) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) slot = i;
        }
        if (slot < 0 || out[slot] != nullptr) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected or repeated keyword argument '%U'", fn, key);
            return false;
        }
        out[slot] = args[nargs + j];
    }
    for (int i = 0; i < required; ++i) {
        if (out[i] == nullptr) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, names[i]);
            return false;
        }
    }
    return true;
}

PyObject* producer_log_scalar(PyObject* op, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    static const char* const names[] = {"name", "value", "step"};
    PyObject* a[3];
    Busy busy(self);
    if (!ready(self) || !parse("log_scalar", args, nargs, kwnames, names, 2, 3, a)) return nullptr;
    std::uint32_t id;
    double value;
    if (!lookup_id(self, a[0], &id) || !fast_value(a[1], &value)) {
        return PyObject_CallMethodObjArgs(op, str_log_scalar_slow, a[0], a[1], a[2] ? a[2] : Py_None, nullptr);
    }
    long long step;
    if (!resolve_step(self, a[2], &step)) return nullptr;
    if (!push(**self->stream, Record{id, 0, step, value, wall_clock_now()})) return nullptr;
    Py_RETURN_NONE;
}

PyObject* producer_log(PyObject* op, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    static const char* const names[] = {"data", "step"};
    PyObject* a[2];
    Busy busy(self);
    if (!ready(self) || !parse("log", args, nargs, kwnames, names, 1, 2, a)) return nullptr;
    PyObject* data = a[0];
    PyObject* step_arg = a[1] ? a[1] : Py_None;
    if (!PyDict_CheckExact(data)) return PyObject_CallMethodObjArgs(op, str_log_slow, data, step_arg, nullptr);

    thread_local std::vector<Record> records;
    records.clear();
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(data, &pos, &key, &value)) {
        std::uint32_t id;
        double v;
        if (!lookup_id(self, key, &id) || !fast_value(value, &v)) {
            return PyObject_CallMethodObjArgs(op, str_log_slow, data, step_arg, nullptr);
        }
        records.push_back(Record{id, 0, 0, v, 0.0});
    }
    long long step;
    if (!resolve_step(self, step_arg, &step)) return nullptr;
    const double wall = wall_clock_now();
    for (Record& r : records) {
        r.step = step;
        r.wall_time = wall;
    }
    Stream& stream = **self->stream;
    const PushResult res = stream.try_push_all(records.data(), records.size());
    if (res == PushResult::Ok) [[likely]] Py_RETURN_NONE;
    if (!push_all(stream, res, records)) return nullptr;
    Py_RETURN_NONE;
}

// Logs a dict of already-interned names to plain floats at an explicit step, leaving the counter alone
// (for statistics logged at "the current step" from hooks and background threads).
PyObject* producer_log_at(PyObject* op, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    static const char* const names[] = {"data", "step"};
    PyObject* a[2];
    if (!ready(self) || !parse("_log_at", args, nargs, kwnames, names, 2, 2, a)) return nullptr;
    if (!PyDict_CheckExact(a[0])) {
        PyErr_SetString(PyExc_TypeError, "_log_at takes a dict");
        return nullptr;
    }
    long long step;
    if (!resolve_step(self, a[1], &step, false)) return nullptr;
    const double wall = wall_clock_now();
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(a[0], &pos, &key, &value)) {
        std::uint32_t id;
        double v;
        if (!lookup_id(self, key, &id) || !fast_value(value, &v)) {
            PyErr_Format(PyExc_KeyError, "_log_at: %R is not an interned scalar name with a float value", key);
            return nullptr;
        }
        if (!push(**self->stream, Record{id, 0, step, v, wall})) return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* producer_begin(PyObject* op, PyObject*) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    if (self->depth++ == 0) {
        self->outer_start = ticks();
        ++self->calls;
    }
    Py_RETURN_NONE;
}

PyObject* producer_end(PyObject* op, PyObject*) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    if (self->depth > 0 && --self->depth == 0) self->busy_ticks += ticks() - self->outer_start;
    Py_RETURN_NONE;
}

PyObject* producer_get_busy(PyObject* op, void*) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    const long long dt = ticks() - self->ticks_at_init, dns = steady_ns() - self->ns_at_init;
    const double ns_per_tick = dt > 0 && dns > 0 ? static_cast<double>(dns) / static_cast<double>(dt) : 1.0;
    return PyLong_FromLongLong(static_cast<long long>(static_cast<double>(self->busy_ticks) * ns_per_tick));
}

PyObject* producer_get_calls(PyObject* op, void*) {
    return PyLong_FromLongLong(reinterpret_cast<ProducerObject*>(op)->calls);
}

PyObject* producer_take_step(PyObject* op, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    static const char* const names[] = {"step"};
    PyObject* a[1];
    if (!parse("_take_step", args, nargs, kwnames, names, 0, 1, a)) return nullptr;
    long long step;
    if (!resolve_step(self, a[0], &step)) return nullptr;
    return PyLong_FromLongLong(step);
}

int producer_init(PyObject* op, PyObject* args, PyObject* kwargs) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    static const char* kwlist[] = {"stream", nullptr};
    PyObject* stream_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Producer", const_cast<char**>(kwlist), &stream_obj)) return -1;
    std::shared_ptr<Stream> stream;
    try {
        stream = py::cast<std::shared_ptr<Stream>>(py::handle(stream_obj));
    } catch (const py::cast_error&) {
        PyErr_SetString(PyExc_TypeError, "Producer(stream): stream must be a stepwire._core.Stream");
        return -1;
    }
    delete self->stream;
    self->stream = new std::shared_ptr<Stream>(std::move(stream));
    Py_XSETREF(self->ids, PyDict_New());
    if (self->ids == nullptr) return -1;
    self->next_step = 0;
    return 0;
}

PyObject* producer_new(PyTypeObject* type, PyObject*, PyObject*) {
    auto* self = reinterpret_cast<ProducerObject*>(type->tp_alloc(type, 0));
    if (self != nullptr) {
        self->stream = nullptr;
        self->ids = nullptr;
        self->next_step = 0;
        self->busy_ticks = 0;
        self->calls = 0;
        self->outer_start = 0;
        self->depth = 0;
        self->ticks_at_init = ticks();
        self->ns_at_init = steady_ns();
    }
    return reinterpret_cast<PyObject*>(self);
}

void producer_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    delete self->stream;
    Py_CLEAR(self->ids);
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyObject* producer_get_ids(PyObject* op, void*) {
    auto* self = reinterpret_cast<ProducerObject*>(op);
    if (!ready(self)) return nullptr;
    return Py_NewRef(self->ids);
}

PyObject* producer_get_step(PyObject* op, void*) {
    return PyLong_FromLongLong(reinterpret_cast<ProducerObject*>(op)->next_step);
}

PyMethodDef producer_methods[] = {
    {"log_scalar", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(producer_log_scalar)),
     METH_FASTCALL | METH_KEYWORDS,
     "log_scalar(name, value, step=None)\n--\n\nLogs one scalar point; step defaults to the auto counter."},
    {"log", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(producer_log)), METH_FASTCALL | METH_KEYWORDS,
     "log(data, step=None)\n--\n\nLogs every entry of data at one step; step defaults to the auto counter."},
    {"_log_at", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(producer_log_at)),
     METH_FASTCALL | METH_KEYWORDS, "Logs interned names at an explicit step without moving the step counter."},
    {"_busy_begin", producer_begin, METH_NOARGS, "Starts accounting a logging call written in Python."},
    {"_busy_end", producer_end, METH_NOARGS, "Ends accounting a logging call written in Python."},
    {"_take_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(producer_take_step)),
     METH_FASTCALL | METH_KEYWORDS, "Resolves a step argument the way log() does and advances the counter."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef producer_getset[] = {
    {"_scalar_ids", producer_get_ids, nullptr, "dict of interned scalar names to series ids", nullptr},
    {"step", producer_get_step, nullptr, "the step the next call without an explicit step will use", nullptr},
    {"_busy_ns", producer_get_busy, nullptr, "ns callers spent inside logging calls", nullptr},
    {"_calls", producer_get_calls, nullptr, "logging calls made (nested ones count once)", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot producer_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(producer_new)},
    {Py_tp_init, reinterpret_cast<void*>(producer_init)},
    {Py_tp_dealloc, reinterpret_cast<void*>(producer_dealloc)},
    {Py_tp_methods, producer_methods},
    {Py_tp_getset, producer_getset},
    {Py_tp_doc, const_cast<char*>("Per-point logging entry points over a Stream; subclassed by stepwire.Run.")},
    {0, nullptr},
};

PyType_Spec producer_spec = {
    "stepwire._core.Producer",
    sizeof(ProducerObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    producer_slots,
};

}  // namespace

int add_producer_type(PyObject* module) {
    str_log_slow = PyUnicode_InternFromString("_log_slow");
    str_log_scalar_slow = PyUnicode_InternFromString("_log_scalar_slow");
    PyObject* type = PyType_FromSpec(&producer_spec);
    if (type == nullptr) return -1;
    return PyModule_AddObject(module, "Producer", type);
}

}  // namespace stepwire
