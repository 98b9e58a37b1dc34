"""`scale`: a transform plugin written in Python. It multiplies numeric columns by a factor.

    [[transform]]
    plugin = "../plugins/python/scale/scale.wasm"
    config = { columns = ["sepal_length", "sepal_width"], factor = 10 }

Built into a WebAssembly component with componentize-py (see README.md next to this file): this
module is the component's world; the resource the `transform` interface exports is in
`transform.py`. Integer columns become float columns. Every module is imported at the top of a
file: an import inside a function would look for files when it runs, and a plugin has no file
system.
"""
from wit_world import exports


class Transform(exports.Transform):
    """The `transform` interface has no functions of its own, only the resource `Transformer`."""
