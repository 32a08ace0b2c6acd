"""Built-in datasets (nothing is downloaded): generated spirals and scikit-learn's bundled sets."""

from .spirals import make_spirals as make_spirals
from .split import Split as Split
from .split import batches as batches
from .tabular import load_digits_split as load_digits_split
from .tabular import load_wine_split as load_wine_split
from .teacher import make_teacher_split as make_teacher_split

__all__ = ["Split", "batches", "load_digits_split", "load_wine_split", "make_spirals",
           "make_teacher_split"]
