"""GraphiQL's page and files as the app serves them: same origin only, cacheable, and a plain
instruction when the files are not installed. The browser drives it in test_graphiql_browser."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import other_app
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.graphql.ide import CONTENT_SECURITY_POLICY
from zixly.graphql.ide_assets import (
    LOCKFILE,
    NPM_FILES,
    OWN_FILES,
    SOURCE,
    GraphiQLInstallError,
    _check_integrity,
    bundle,
    install,
    pinned_version,
)

HTML = {"Accept": "text/html"}


def require_graphiql_installed(settings: Settings) -> None:
    """CI installs the files (Makefile's install step): missing there is a failure."""
    if bundle(settings).installed:
        return
    message = "GraphiQL's files are not installed: run `zixly graphiql install`"
    if os.environ.get("CI") or os.environ.get("ZIXLY_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


def _page_urls(text: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', text)


async def test_page_loads_only_files_of_this_origin(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    require_graphiql_installed(settings)
    response = await client.get("/graphql", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    urls = _page_urls(response.text)
    key = bundle(settings).key
    expected = {f"/graphiql/{key}/{name}" for name in (*NPM_FILES, *OWN_FILES)}
    assert set(urls) == expected  # no CDN, no other host: every file is served here
    # The bearer-token hint: the headers editor's default and a visible note.
    assert '\\"Authorization\\": \\"Bearer \\u003ctoken>\\"' in response.text
    assert "zixly token --email" in response.text
    # React first, then GraphiQL, then the script that mounts it.
    scripts = [u.rsplit("/", 1)[1] for u in urls if u.endswith(".js")]
    assert scripts == [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "zixly-graphiql.js",
    ]
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        media = "text/css" if url.endswith(".css") else "text/javascript"
        assert asset.headers["content-type"] == f"{media}; charset=utf-8"
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert "etag" in asset.headers
    graphiql = await client.get(f"/graphiql/{key}/graphiql.min.js")
    assert b"window.GraphiQL" in graphiql.content


async def test_files_are_gzipped_only_for_clients_that_ask(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    require_graphiql_installed(settings)
    target = bundle(settings)
    url = f"/graphiql/{target.key}/graphiql.min.js"
    on_disk = (target.root / "graphiql.min.js").read_bytes()
    # httpx decodes transparently; read the raw bytes to see what went over the wire
    plain = await client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == on_disk
    async with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        raw = b"".join([chunk async for chunk in zipped.aiter_raw()])
    assert len(raw) < len(on_disk) / 3
    assert gzip.decompress(raw) == on_disk


async def test_unknown_names_and_stale_keys_are_not_found(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    require_graphiql_installed(settings)
    key = bundle(settings).key
    for url in (
        f"/graphiql/{key}/graphiql.min.js.map",  # only the listed files are served
        f"/graphiql/{key}/.zixly-installed.json",
        f"/graphiql/{key}/..%2Fpackage.json",
        f"/graphiql/{'0' * len(key)}/graphiql.min.js",  # a key of other files
    ):
        assert (await client.get(url)).status_code == 404, url


async def _page_and_script(
    endpoints: Endpoints, settings: Settings
) -> tuple[httpx.Response, httpx.Response]:
    """GET /graphql from a browser, and GraphiQL's bundle, from an app with ``settings``."""
    async with other_app(endpoints, settings) as (_, c):
        page = await c.get("/graphql", headers=HTML)
        script = await c.get(f"/graphiql/{bundle(settings).key}/graphiql.min.js")
    return page, script


async def test_missing_files_say_how_to_install_them(
    settings: Settings, endpoints: Endpoints, tmp_path: Path
) -> None:
    empty = settings.model_copy(update={"graphiql_cache_dir": tmp_path})
    response, asset = await _page_and_script(endpoints, empty)
    assert response.status_code == 503
    assert "zixly graphiql install" in response.text
    assert "Loading" not in response.text
    assert not [u for u in _page_urls(response.text) if u.endswith(".js")]
    assert asset.status_code == 404


async def test_graphiql_setting_off_serves_neither_page_nor_files(
    settings: Settings, endpoints: Endpoints
) -> None:
    page, asset = await _page_and_script(endpoints, settings.model_copy(update={"graphiql": False}))
    assert page.status_code == 404
    assert "<html" not in page.text
    assert asset.status_code == 404


@dataclass
class Phases:
    """What an install reported (the InstallProgress protocol the CLI draws with rich)."""

    seen: list[str] = field(default_factory=list)

    def phase(self, text: str, *, watch: Path | None = None) -> None:
        self.seen.append(text)

    def output(self, line: str) -> None:
        pass


def test_the_lock_file_pins_every_package_by_hash_and_names_no_registry() -> None:
    manifest = json.loads((SOURCE / "package.json").read_text())
    lock = json.loads(LOCKFILE.read_text())
    assert lock["packages"][""]["dependencies"] == manifest["dependencies"]
    for name, version in manifest["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), name  # exact versions only
        assert pinned_version(name) == version
    assert pinned_version("graphiql").startswith("3.")  # GraphiQL 3 runs on React 18's UMD
    assert pinned_version("react").startswith("18.")
    packages = {k: v for k, v in lock["packages"].items() if k}
    assert packages
    for path, entry in packages.items():
        assert entry["integrity"].startswith("sha512-"), path
        assert "resolved" not in entry, path  # npm ci asks the configured registry


def test_install_keeps_only_the_served_files_and_runs_once(
    settings: Settings, tmp_path: Path
) -> None:
    target = settings.model_copy(update={"graphiql_cache_dir": tmp_path / "cache"})
    progress = Phases()
    done = install(target, progress)  # real npm pack (npm's cache makes a repeat quick)
    assert done.installed and done == bundle(target)
    assert progress.seen == [f"downloading GraphiQL {done.graphiql_version} and React from npm"]
    assert sorted(p.name for p in done.root.iterdir()) == sorted(
        [*NPM_FILES, ".zixly-installed.json"]
    )
    marker = json.loads((done.root / ".zixly-installed.json").read_text())
    assert marker["versions"]["graphiql"] == done.graphiql_version
    for name in NPM_FILES:
        digest = hashlib.sha256((done.root / name).read_bytes()).hexdigest()
        assert marker["sha256"][name] == digest
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".partial")] == []
    again = Phases()
    assert install(target, again) == done
    assert again.seen == []  # already there: npm is not run again


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    tarball = tmp_path / "react-18.3.1.tgz"
    tarball.write_bytes(b"not the tarball the lock file pins")
    pinned = json.loads(LOCKFILE.read_text())["packages"]["node_modules/react"]["integrity"]
    with pytest.raises(GraphiQLInstallError, match="does not match the lock file's sha512"):
        _check_integrity(tarball, pinned)
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    _check_integrity(tarball, f"sha512-{digest}")  # the same check passes the right bytes
    with pytest.raises(GraphiQLInstallError, match="not sha512"):
        _check_integrity(tarball, "sha1-" + digest)
