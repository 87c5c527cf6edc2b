"""PDEBench-compatible HDF5 storage for the PDE data sets: the public entry points.

* :mod:`~physdiff.data.pdebench.layout`: the three file layouts (1-D time-dependent, Darcy, 2-D
  time-dependent) and their detection, :class:`FieldData`, :func:`default_splits`, file-name parsing;
* :mod:`~physdiff.data.pdebench.reader`: :func:`load_pde` (physdiff and real PDEBench files);
* :mod:`~physdiff.data.pdebench.writer`: :func:`write_pde`, :func:`simulate_to_file`.

Real PDEBench files load unchanged; files written here use PDEBench's key names and add the ``system``
attribute, the parameters and the sample splits. Bad input raises :class:`PDEBenchFormatError` (a
``ValueError``) naming the file and the key.
"""

from physdiff.data.pdebench.layout import SYSTEMS, FieldData, PDEBenchFormatError, default_splits
from physdiff.data.pdebench.reader import load_pde
from physdiff.data.pdebench.writer import simulate_to_file, write_pde

__all__ = [
    "FieldData",
    "PDEBenchFormatError",
    "write_pde",
    "load_pde",
    "simulate_to_file",
    "default_splits",
    "SYSTEMS",
]
