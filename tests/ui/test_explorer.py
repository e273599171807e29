"""The explorer served by ``stepsaga serve`` (a real process): the page for a browser
at /graphql, its files under /ui/, and the API at /graphql as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.responses import PlainTextResponse

from graphql_api.explorer import WithExplorer

from .conftest import Server, serving
from .test_bundle import page_refs

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
QUERY = "{ allSagas { name } }"

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with its explorer on (it is off by default)."""
    with serving(tmp_path_factory.mktemp("explorer") / "s.sqlite", explorer=True) as served:
        yield served



def test_a_browser_opening_graphql_gets_the_explorer(server: Server) -> None:
    page = server.http.get(server.url, headers=BROWSER)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>stepsaga GraphQL explorer</title>" in page.text
    # should a later bundle ask another host for anything, the browser refuses
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"


def test_the_page_s_files_are_served_under_ui(server: Server) -> None:
    kinds = {".js": "text/javascript", ".css": "text/css"}
    refs = [ref for ref in page_refs() if ref.startswith("/ui/")]
    assert refs
    with httpx.Client(base_url=server.origin) as client:
        for ref in refs:
            answer = client.get(ref)
            assert answer.status_code == 200, ref
            assert answer.headers["content-type"].startswith(kinds[Path(ref).suffix]), ref
            assert answer.content == (Path(__file__).parents[2] / "ui/dist"
                                      / ref.removeprefix("/ui/")).read_bytes()
        assert client.get("/ui/assets/nothing.js").status_code == 404


def test_operations_at_graphql_are_still_the_api_s(server: Server) -> None:
    posted = server.http.post(server.url, json={"query": QUERY}, headers=BROWSER)
    assert posted.json() == {"data": {"allSagas": [{"name": "demo"}]}}
    # a query in the URL is an operation, whatever the client accepts
    got = server.http.get(server.url, params={"query": QUERY}, headers=BROWSER)
    assert got.json() == {"data": {"allSagas": [{"name": "demo"}]}}
    # a client that does not ask for HTML gets no page
    plain = server.http.get(server.url, headers={"Accept": "application/json"})
    assert "stepsaga GraphQL explorer" not in plain.text


async def test_without_a_built_bundle_the_page_says_how_to_build_it(tmp_path: Path) -> None:
    # a response is an ASGI app: the smallest API there is
    app = WithExplorer(PlainTextResponse("the api"), dist=tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        page = await client.get("/graphql", headers=BROWSER)
        assert page.status_code == 503
        assert "scripts/build_ui.py" in page.text and "npm" in page.text
        assert (await client.post("/graphql")).text == "the api"
        assert (await client.get("/graphql", params={"query": QUERY},
                                 headers=BROWSER)).text == "the api"
