"""mdbatch: the command-line face of the camera-trap detection batch service.

`mdbatch detect FOLDER --model demo` runs the whole service on one machine
(embedded host, local folder storage, local compute); the other commands drive
any deployment over its HTTP API. See README.md.
"""

__version__ = "0.1.0"
