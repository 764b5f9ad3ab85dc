# Type stubs for the parts of the Workers runtime's `js` module that Flaregate uses.
# (The real module exists only inside the runtime; `pywrangler types` can generate a full
# set, which needs the network. These cover exactly what src/ touches.)
from typing import Any

class _Constructible:
    @staticmethod
    def new(*args: Any) -> Any: ...

class TransformStream(_Constructible): ...
class WebSocketPair(_Constructible): ...
class Object:
    @staticmethod
    def fromEntries(entries: Any) -> Any: ...
    @staticmethod
    def new() -> Any: ...

console: Any

def __getattr__(name: str) -> Any: ...
