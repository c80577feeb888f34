// Per-point entry points written against the CPython API (METH_FASTCALL): a pybind11 call costs ~5x more.
#pragma once
#include <Python.h>

namespace stepwire {

// Adds the type `Producer` to the module: the base class of stepwire.Run.
int add_producer_type(PyObject* module);

}  // namespace stepwire
