"""CUDA C++ kernels (csrc/, built by CMake + pybind11 into ``swav_kernels._C``)."""
