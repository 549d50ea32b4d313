"""``backend="cuda"``: library matmuls through torch and the CUDA C++ kernels of csrc/ (built by CMake +
pybind11 into ``swav_kernels._C``); ``backend.py`` says how they fit together."""
