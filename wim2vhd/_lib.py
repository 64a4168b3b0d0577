"""The one module that imports the compiled extension (built from native/)."""
try:
    from wim2vhd._native import ffi, lib  # noqa: F401
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        "wim2vhd's native extension is not built: run `make setup` "
        "(or `make native`)"
    ) from e
