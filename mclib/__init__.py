"""mclib: the library behind the book on mode connectivity and adversarial vulnerability.

Modules depend downward only: notebooks -> repair/detect/... -> paths/curves/attacks -> train/models/data -> config.
"""
__version__ = "0.1.0"
