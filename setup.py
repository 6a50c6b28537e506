"""Build script: packages plus the optional CUDA extension ``alarm_kernels._C``.

The extension is built when the installed torch is a CUDA build and nvcc (CUDA_HOME) is found;
otherwise it is skipped with one message and the package works with its reference and Triton backends.
Set ALARM_KERNELS_SKIP_CUDA=1 to skip it on purpose. Install with ``pip install --no-build-isolation -e .``
(build isolation would hide the installed torch from this script).
"""
import glob
import os

from setuptools import find_packages, setup

# kernels/ holds the package alarm_kernels (a src-style folder); alarm/ sits at the repository root.
PACKAGES = find_packages("kernels", include=["alarm_kernels", "alarm_kernels.*"])
PACKAGES += find_packages(".", include=["alarm", "alarm.*"])


def cuda_extension():
    if os.environ.get("ALARM_KERNELS_SKIP_CUDA") == "1":
        print("alarm_kernels: ALARM_KERNELS_SKIP_CUDA=1, not building the CUDA extension")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as exc:
        print(f"alarm_kernels: torch is not importable ({exc}); not building the CUDA extension")
        return [], {}
    if torch.version.cuda is None or CUDA_HOME is None:
        why = "a CPU build" if torch.version.cuda is None else "CUDA, but nvcc was not found"
        print(
            "alarm_kernels: skipping the CUDA extension "
            f"(torch {torch.__version__} is {why}); "
            "reference and Triton backends only"
        )
        return [], {}
    root = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "*.cu"))) + [os.path.join("csrc", "bindings.cpp")]
    include_dirs = [os.path.join(root, "csrc")]
    import site

    for base in site.getsitepackages():  # CUDA 13 wheels keep cusparse.h & co here (docs/building.md)
        candidate = os.path.join(base, "nvidia", "cu13", "include")
        if os.path.isdir(candidate):
            include_dirs.append(candidate)
    ext = CUDAExtension(
        name="alarm_kernels._C",
        sources=sources,
        include_dirs=include_dirs,
        extra_compile_args={
            "cxx": ["-O3", "-std=c++20"],
            "nvcc": ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr"],
        },
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = cuda_extension()
setup(
    packages=PACKAGES,
    package_dir={"alarm_kernels": "kernels/alarm_kernels", "alarm": "alarm"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
