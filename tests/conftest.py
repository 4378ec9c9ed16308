"""The Triton kernels' tests run in Triton's interpreter (CPU) unless TRITON_INTERPRET is set:
set here, before any test module imports triton, whichever of them runs first. On a GPU
machine run with TRITON_INTERPRET=0 to test the compiled kernels on the GPU."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
