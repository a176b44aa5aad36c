"""The dashboard's files: the page, its script and styles, and the uPlot chart library.

No build step and no CDN: ``static/`` is served as written, and the charts come from
uPlot as the ``uplot-python`` package ships it (``uplot/static/uPlot.iife.js`` and
``uPlot.min.css``, found without importing the package), held in memory with their gzip
once first asked for.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Any, Final

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect

from tachimeter.errors import ConfigError
from tachimeter.metrics.exposition import gzip_accepted

__all__ = ["DASHBOARD_HANDLERS"]

_STATIC: Final = Path(__file__).resolve().parent.parent / "static"
# Litestar appends "; charset=utf-8" to a text/ type itself (naming it here too sent it
# twice).
_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# The page is re-read on each load (it is small, and a new version must show at once);
# uPlot is versioned by its package, so browsers may keep it for a day.
_NO_CACHE: Final = {"Cache-Control": "no-cache"}
_VENDOR_CACHE: Final = {"Cache-Control": "public, max-age=86400"}


# The vendored files served, by the name the page asks for.
_VENDOR_FILES: Final = ("uPlot.iife.js", "uPlot.min.css")


@functools.cache
def _vendor(name: str) -> tuple[bytes, bytes]:
    """A file of the installed ``uplot-python`` package's data, and its gzip."""
    spec = importlib.util.find_spec("uplot")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "static" / name
        if path.is_file():
            raw = path.read_bytes()
            return raw, gzip.compress(raw, compresslevel=6, mtime=0)
    raise ConfigError(
        "the dashboard's charts need the uplot-python package (its bundled uPlot): "
        "pip install 'uplot-python>=1.1,<2'"
    )


def _file(name: str) -> Response[bytes]:
    path = (_STATIC / name).resolve()
    if path.parent != _STATIC or not path.is_file() or path.suffix not in _TYPES:
        raise NotFoundException(detail=f"no dashboard file {name!r}")
    return Response(path.read_bytes(), media_type=_TYPES[path.suffix], headers=_NO_CACHE)


@get("/", include_in_schema=False, sync_to_thread=False)
def index() -> Response[bytes]:
    """The dashboard page."""
    return _file("index.html")


@get("/docs", include_in_schema=False, sync_to_thread=False)
def docs() -> Redirect:
    """The interactive API documentation, a page of the dashboard."""
    return Redirect("/#/api")


@get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)
def static_file(name: FromPath[str]) -> Response[bytes]:
    """A file of ``static/``."""
    return _file(name)


@get("/static/vendor/{name:str}", include_in_schema=False, sync_to_thread=False)
def vendor_file(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    """uPlot's script or styles (gzip when accepted)."""
    if name not in _VENDOR_FILES:
        raise NotFoundException(detail=f"no vendored file {name!r}")
    raw, packed = _vendor(name)
    headers = {**_VENDOR_CACHE, "Vary": "Accept-Encoding"}
    media_type = _TYPES[Path(name).suffix]
    if gzip_accepted(request.headers.get("accept-encoding")):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type=media_type, headers=headers)
    return Response(raw, media_type=media_type, headers=headers)


DASHBOARD_HANDLERS: tuple[Any, ...] = (index, docs, static_file, vendor_file)
