"""The `transform` interface of the `scale` plugin: componentize-py looks for the class of an
exported resource in a module named after its interface, so `Transformer` lives here."""
import json

from componentize_py_types import Err
from wit_world.exports import transform
from wit_world.imports import host, types


class Transformer(transform.Transformer):
    def __init__(self, columns: list, factor: float):
        self.columns = columns
        self.factor = factor

    @classmethod
    def open(cls, config: str) -> "Transformer":
        try:
            parsed = json.loads(config)
            columns, factor = parsed["columns"], float(parsed["factor"])
        except (ValueError, KeyError, TypeError) as e:
            raise Err(f"invalid config: needs `columns` (a list) and `factor` (a number): {e!r}")
        host.log(host.Level.INFO, f"scaling {', '.join(columns)} by {factor}")
        return cls(columns, factor)

    def process(self, input: types.Batch) -> types.Batch:
        names = [c.name for c in input.columns]
        for name in self.columns:
            if name not in names:
                raise Err(types.Error(message=f"no column `{name}` (the batch has: {', '.join(names)})", row=None))
        for column in input.columns:
            if column.name not in self.columns:
                continue
            values = column.values
            if isinstance(values, (types.Values_F64, types.Values_S64)):
                column.values = types.Values_F64([v * self.factor for v in values.value])
            else:
                raise Err(types.Error(message=f"column `{column.name}` is not numeric", row=None))
        return input

    def finish(self):
        return None
