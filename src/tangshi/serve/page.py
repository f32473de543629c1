"""The web page: GET / and its script and style under /static. The files are the package's
`tangshi/web/` (index.html, app.js, style.css); the page calls the JSON API like any client."""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles


def web_root() -> Path:
    return Path(str(resources.files("tangshi") / "web"))


router = APIRouter()
router.mount("/static", StaticFiles(directory=web_root()), name="static")


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(web_root() / "index.html")
